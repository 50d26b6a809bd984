"""Renderer of ``results/flower/``: the same workload on the embedded engine and on Flower.

Reads ``runs.csv`` (one row per run: runtime, repeat, per-round and total wall time, peak summed
RSS/PSS of all processes, processes seen, final accuracy), ``imports.csv`` (seconds to import
a module in a fresh Python) and ``meta.json``, all written by ``ilora bench flower``.
Figures are medians over the repeats; ratios are against the embedded engine.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ilora.report._plot import save_png
from ilora.report._table import command_block
from ilora.report._table import md_table
from ilora.report._table import meta_line
from ilora.report._table import num
from ilora.report._table import read_csv
from ilora.report._table import read_meta

ORDER = ("embedded", "simulation", "deployment", "deployment-per-message")
LABELS = {
    "embedded": "embedded engine (`ilora run`)",
    "simulation": "Flower Simulation Engine (`ilora flower simulate`, Ray)",
    "deployment": "Flower Deployment Engine, one `ilora flower worker` per SuperNode",
    "deployment-per-message": "Flower Deployment Engine, one ClientApp process per message",
}
TARGET = 2.0  # the deployment's s / round and the simulation's total s, × embedded
# flwr 1.42, per message to a SuperNode: it finds none right after its last reply and sleeps
# 3 s before asking again (flwr/supernode/start_client_internal.py:263), then checks for the
# ClientApp's reply every 0.5 s (line 470); no flag, config key or variable changes either.
SUPERNODE_IDLE_S = 3.0
SUPERNODE_REPLY_POLL_S = 0.5
COLUMNS = ("round_wall_median_s", "total_wall_s", "peak_rss_mb", "peak_pss_mb", "processes_seen")


def medians(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Return ``{runtime: {column: median over the repeats}}`` in :data:`ORDER`."""
    by_runtime: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_runtime[row["runtime"]].append(row)
    return {
        rt: {c: statistics.median(num(r[c]) for r in by_runtime[rt]) for c in COLUMNS}
        for rt in ORDER
        if rt in by_runtime
    }


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.1f}×" if base > 0 else "n/a"


def _figure(med: dict[str, dict[str, float]], img: Path) -> str:
    names = list(med)
    fig = Figure(figsize=(10, 3.6))
    left, right = fig.subplots(1, 2)
    for ax, column, title, xlabel in (
        (left, "round_wall_median_s", "Wall time per round (median)", "seconds (log scale)"),
        (right, "peak_rss_mb", "Peak memory, all processes", "summed RSS, MB"),
    ):
        ax.barh(names, [med[n][column] for n in names], color=["#4c72b0", "#dd8452", "#55a868"])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    left.set_xscale("log")
    fig.suptitle("One workload on three runtimes")
    fig.tight_layout()
    return save_png(fig, img, "flower-runtimes", "wall time per round and peak memory per runtime")


def _sentences(
    med: dict[str, dict[str, float]], rows: list[dict[str, str]], flwr: str, messages: float
) -> list[str]:
    out = []
    base = med.get("embedded")
    if base:
        for rt in ORDER[1:]:
            if rt in med:
                r = {c: _ratio(med[rt][c], base[c]) for c in COLUMNS}
                out.append(
                    f"The {rt} runtime takes {r['round_wall_median_s']} the embedded engine's "
                    f"wall time per round, {r['total_wall_s']} its total wall time and "
                    f"{r['peak_rss_mb']} its peak memory (summed RSS; {r['peak_pss_mb']} in PSS)."
                )
    out += _targets(med, flwr, messages)
    finals = {r["final_accuracy"] for r in rows}
    if len(finals) == 1:
        out.append(
            f"Every run ends at the same final accuracy ({100 * num(finals.pop()):.2f}%): the "
            "runtimes differ in cost only."
        )
    else:
        out.append(f"The final accuracies differ between runs: {sorted(finals)}.")
    return out


def _targets(med: dict[str, dict[str, float]], flwr: str, messages: float) -> list[str]:
    """Say whether the targets are met, and the deployment's floor per round on this flwr.

    ``messages``: messages per SuperNode per round (``meta.json``; 1 when not recorded).
    """
    base, out = med.get("embedded"), list[str]()
    if not base:
        return out
    for rt, column, what in (
        ("deployment", "round_wall_median_s", "seconds per round"),
        ("simulation", "total_wall_s", "total seconds"),
    ):
        if rt in med:
            ratio = med[rt][column] / base[column]
            verdict = "meets" if ratio <= TARGET else "misses"
            out.append(
                f"Target {TARGET:.0f}× embedded for the {rt}'s {what}: {ratio:.1f}×, {verdict} it."
            )
    if "deployment" in med:
        floor = messages * (SUPERNODE_IDLE_S + SUPERNODE_REPLY_POLL_S)
        rest = med["deployment"]["round_wall_median_s"] - floor
        out.append(
            f"On flwr {flwr} every message to a SuperNode waits about {SUPERNODE_IDLE_S:.0f} s: "
            "right after replying the SuperNode finds no message (the server is still "
            f"collecting the other replies) and sleeps {SUPERNODE_IDLE_S:.0f} s before asking "
            f"again, then checks for its ClientApp's reply every {SUPERNODE_REPLY_POLL_S} s; no "
            f"option changes either. With {messages:g} message(s) per round a deployment round "
            f"cannot be shorter than about {floor:.1f} s, "
            f"{_ratio(floor, base['round_wall_median_s'])} the embedded round here. Beyond "
            f"that floor, a round costs {rest:.2f} s here."
        )
    return out


def _messages(meta: Mapping[str, Any]) -> float:
    """Return the recorded messages per SuperNode per round (1, a lower bound, if absent)."""
    return float(meta.get("messages_per_round", 1.0))


def _minor(version: object) -> str:
    """Return ``major.minor`` of a recorded version ("(version not recorded)" when absent)."""
    return ".".join(str(version).split(".")[:2]) if version else "(version not recorded)"


def _imports(src: Path) -> tuple[str, list[str]]:
    path = src / "imports.csv"
    if not path.is_file():
        return "", []
    by_module: dict[str, list[float]] = defaultdict(list)
    for row in read_csv(path):
        by_module[row["module"]].append(num(row["seconds"]))
    med = {m: statistics.median(v) for m, v in by_module.items()}
    table = md_table(
        ["in a fresh Python: imported (or started)", "seconds (median)"],
        [[f"`{m}`", f"{s:.1f}"] for m, s in med.items()],
    )
    notes = []
    built = med.get("ilora.flower.client + build")
    if "ilora.flower.client" in med:
        notes.append(
            f"A fresh ClientApp process spends about {med['ilora.flower.client']:.1f} s "
            "importing `ilora.flower.client`"
            + (
                f" and {built:.1f} s until the experiment is built (the task's model code "
                "imports transformers)"
                if built is not None
                else ""
            )
            + ". With one process per message every message pays it; an `ilora flower worker` "
            "pays it once per SuperNode."
        )
    return table, notes


RUNTIME_HEADERS = [
    "runtime",
    "s / round",
    "× embedded",
    "total s",
    "× embedded",
    "peak RSS MB",
    "× embedded",
    "peak PSS MB",
    "processes",
]


def _runtime_table(med: dict[str, dict[str, float]]) -> str:
    """Return one row per runtime: medians and their ratios to the embedded engine."""
    base = med.get("embedded", {})
    return md_table(
        RUNTIME_HEADERS,
        [
            [
                LABELS.get(rt, rt),
                f"{m['round_wall_median_s']:.2f}",
                _ratio(m["round_wall_median_s"], base.get("round_wall_median_s", 0.0)),
                f"{m['total_wall_s']:.1f}",
                _ratio(m["total_wall_s"], base.get("total_wall_s", 0.0)),
                f"{m['peak_rss_mb']:.0f}",
                _ratio(m["peak_rss_mb"], base.get("peak_rss_mb", 0.0)),
                f"{m['peak_pss_mb']:.0f}",
                f"{m['processes_seen']:.0f}",
            ]
            for rt, m in med.items()
        ],
    )


def _setting(meta: Mapping[str, Any], repeats: int) -> str:
    """Return the workload, repeats, flwr version, machine and load line."""
    load = (
        f" Load average on the shared machine: {meta['load_average_start']:.1f} at the start,"
        f" {meta['load_average_end']:.1f} at the end."
        if "load_average_start" in meta
        else ""
    )
    return (
        f"Workload: `{meta.get('workload', '?')}`; medians over {repeats} repeat(s); "
        f"flwr {meta.get('flwr', '?')}. " + meta_line(meta) + load + "\n"
    )


def render(src: Path, img: Path) -> str:
    """Return the markdown section of ``src`` (``results/flower``); its figure goes to ``img``."""
    meta = read_meta(src)
    rows = read_csv(src / "runs.csv")
    med = medians(rows)
    imports_table, import_notes = _imports(src)
    parts = [
        "## Embedded engine vs Flower (simulation and local deployment)\n",
        command_block(str(meta.get("command", ""))),
        _setting(meta, len({r["repeat"] for r in rows})),
        _figure(med, img) + "\n",
        _runtime_table(med),
        " ".join(_sentences(med, rows, _minor(meta.get("flwr")), _messages(meta)) + import_notes)
        + "\n",
        "*s / round*: median of the rounds' `wall_s` in `history.jsonl` (the server's round loop). "
        "*total s*: the whole command, start-up included (deployment: from starting the SuperLink "
        "to the end of `flwr run`). *peak RSS/PSS*: the largest sum over all processes of the run "
        f"(sampled every {meta.get('memory_sample_every_s', '(not recorded)')} s; PSS splits "
        "shared pages). *processes*: distinct processes seen.\n",
    ]
    if imports_table:
        parts.append(imports_table)
    if (src / "parity" / "parity.csv").is_file():
        parts.append(_parity(src / "parity"))
    return "\n".join(parts)


def _parity(src: Path) -> str:
    """Return the parity table: is each algorithm bitwise equal on both runtimes."""
    rows = read_csv(src / "parity.csv")
    meta = read_meta(src)
    same = [r for r in rows if r["identical_model"] == "True" and r["identical_history"] == "True"]
    table = md_table(
        ["algorithm", "ranks", "identical global model", "identical history", "final accuracy %"],
        [
            [
                r["algorithm"],
                r["ranks"],
                "yes" if r["identical_model"] == "True" else "NO",
                "yes" if r["identical_history"] == "True" else "NO",
                f"{100 * float(r['final_accuracy']):.2f}",
            ]
            for r in rows
        ],
    )
    return "\n".join(
        [
            "### Parity: the same results on both runtimes\n",
            command_block(str(meta.get("command", ""))),
            f"{len(same)} of {len(rows)} registered methods give a bitwise-identical global "
            "model (factors, head, residual) and history (bytes, counts, every metric) on the "
            "embedded engine and on Flower (`AlgorithmStrategy` + `ClientApp` exchanging Flower "
            f"messages in-process), {meta.get('rounds', '?')} rounds, "
            f"{meta.get('clients', '?')} clients with mixed ranks "
            f"(`{meta.get('config', 'config not recorded')}`).\n",
            table,
        ]
    )
