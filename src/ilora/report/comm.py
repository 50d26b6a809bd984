"""Bytes on the wire (``results/comm/``, written by ``ilora bench comm``): engine vs formula.

One row per method: the mean MB per round the engine counted, what the method's analytic
formula (declared at the end of its module in ``src/ilora/algorithms/``) gives for the same
rounds, and the worst relative deviation over every round and direction of every run.
"""

from __future__ import annotations

from pathlib import Path

from ilora.report._table import command_block
from ilora.report._table import md_table
from ilora.report._table import meta_line
from ilora.report._table import num
from ilora.report._table import read_csv
from ilora.report._table import read_meta

EXACT = 1e-9  # relative deviation treated as equal (float rounding of a mean)
MECHANICS = {
    "hetlora": (
        "its clients self-prune their rank, and the formula takes the mean upload rank HetLoRA "
        "reports each round"
    ),
}


def _verdict(rows: list[dict[str, str]]) -> str:
    runs = sum(int(r["runs"]) for r in rows)
    off = [r for r in rows if num(r["max_deviation"]) > EXACT]
    if not off:
        return (
            f"Every one of the {len(rows)} methods matches its formula in every round of every "
            f"one of the {runs} runs (largest relative deviation "
            f"{max(num(r['max_deviation']) for r in rows):.1e})."
        )
    listed = ", ".join(f"{r['algorithm']} {100 * num(r['max_deviation']):.3f}%" for r in off)
    return f"{len(off)} of {len(rows)} methods deviate from their formula: {listed}."


def _smaller_uploads(rows: list[dict[str, str]]) -> str:
    """Return the methods that download what FedIT does but upload less, with the reason."""
    base = next((r for r in rows if r["algorithm"] == "fedit"), None)
    if base is None:
        return ""
    down, up = num(base["down_measured"]), num(base["up_measured"])
    found = [
        r
        for r in rows
        if abs(num(r["down_measured"]) - down) <= EXACT * down and num(r["up_measured"]) < up
    ]
    parts = []
    for r in found:
        why = MECHANICS.get(r["algorithm"], "")
        parts.append(
            f"{r['algorithm']} downloads what fedit does but uploads "
            f"{num(r['up_measured']):.4f} instead of {up:.4f} MB per round"
            + (f": {why}" if why else "")
        )
    return " ".join(p + "." for p in parts)


def render(src: Path, img: Path) -> str:
    """Return the communication section (no figures)."""
    meta = read_meta(src)
    rows = read_csv(src / "comm.csv")
    mb = int(meta.get("mb", 2**20))
    unit = "2^20" if mb == 2**20 else f"{mb}"
    body = [
        [
            r["algorithm"],
            r["runs"],
            f"{num(r['down_measured']):.4f}",
            f"{num(r['down_analytic']):.4f}",
            f"{num(r['up_measured']):.4f}",
            f"{num(r['up_analytic']):.4f}",
            f"{100 * num(r['max_deviation']):.3f}%",
        ]
        for r in rows
    ]
    table = md_table(
        [
            "algorithm",
            "runs",
            "MB down / round (measured)",
            "analytic",
            "MB up / round (measured)",
            "analytic",
            "max deviation",
        ],
        body,
    )
    return (
        "## Communication: the engine's bytes against the formulas\n\n"
        f"{meta_line(meta)}\n\n{command_block(str(meta.get('command', '')))}\n"
        f"For every finished run under `{meta.get('runs_dir', '')}`, the bytes of every round "
        "recomputed from each method's analytic formula (declared beside it, `@traffic.formula` "
        "at the end of its module in `src/ilora/algorithms/`: the adapted "
        "layers' shapes, the clients' ranks, the seeded sampler, the method's hyperparameters) "
        f"against what the engine counted; MB = {unit} bytes here.\n\n"
        f"{table}\n{_verdict(rows)} {_smaller_uploads(rows)}\n"
    )
