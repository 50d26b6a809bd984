"""Render ``results/engine/scale/`` (``ilora bench engine --parts scale``) for RESULTS.md.

Reads ``scale.csv`` (one row per registered-client count and client store) and ``meta.json``.
Targets of issue 15: 100,000 registered ILoRA-S clients within 4 GB peak RSS (the disk store),
and a round's time that does not grow with the registered clients, only with the sampled ones
(read on CPU time: the ratio of the largest to the smallest count's median round).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report._plot import plt
from ilora.report._plot import save_png
from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head

MB, GB = 2**20, 10**9
TARGET_CLIENTS, TARGET_BYTES = 100_000, 4 * GB
FLAT = 1.25  # a round at the largest count within 25% of the smallest's: no growth with N


def _row(r: Mapping[str, str]) -> list[object]:
    return [
        int(r["clients"]),
        r["store"],
        r["sampled_per_round"],
        r["rounds"],
        f"{float(r['round_cpu_s_median']):.3f}",
        f"{float(r['round_cpu_s_min']):.3f} .. {float(r['round_cpu_s_max']):.3f}",
        f"{float(r['round_s_median']):.3f}",
        f"{float(r['peak_rss_bytes']) / MB:.0f}",
        f"{float(r['peak_rss_rounds_bytes']) / MB:.0f}",
        f"{float(r['state_bytes_per_client']) / 1024:.1f}",
    ]


HEADERS = [
    "registered clients",
    "client store",
    "sampled / round",
    "rounds",
    "round CPU s (median)",
    "CPU min .. max",
    "round wall s (median)",
    "peak RSS MB (process)",
    "peak RSS MB (rounds)",
    "state KiB / client",
]


def _verdicts(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Return one sentence per store on round-time growth and one on the memory target."""
    text = []
    for store in sorted({r["store"] for r in rows}):
        mine = sorted((r for r in rows if r["store"] == store), key=lambda r: int(r["clients"]))
        lo, hi = mine[0], mine[-1]
        ratio = float(hi["round_cpu_s_median"]) / float(lo["round_cpu_s_median"])
        flat = "does not grow" if ratio <= FLAT else "GROWS"
        added = int(hi["clients"]) - int(lo["clients"])
        per = (float(hi["peak_rss_bytes"]) - float(lo["peak_rss_bytes"])) / max(1, added)
        state = float(hi["state_bytes_per_client"]) / 1024
        text.append(
            f"{store} store: a round at {int(hi['clients']):,} registered clients costs "
            f"{ratio:.2f}x the CPU time of one at {int(lo['clients']):,} (median rounds): the "
            f"round time {flat} with the registered clients; the peak grows by "
            f"{per / 1024:.1f} KiB per added client (its state: {state:.1f} KiB)."
        )
        if int(hi["clients"]) >= TARGET_CLIENTS:
            peak = float(hi["peak_rss_bytes"])
            ok = "within" if peak <= TARGET_BYTES else "ABOVE"
            text.append(
                f"{int(hi['clients']):,} clients with the {store} store peak at {peak / GB:.2f} GB "
                f"(10^9 bytes) over the whole process, {ok} the 4 GB target."
            )
    return text


def _plot(rows: Sequence[Mapping[str, str]], img: Path) -> str:
    fig, (ax_mem, ax_cpu) = plt.subplots(1, 2, figsize=(10, 4))
    for store in sorted({r["store"] for r in rows}):
        mine = sorted((r for r in rows if r["store"] == store), key=lambda r: int(r["clients"]))
        ns = [int(r["clients"]) for r in mine]
        ax_mem.plot(ns, [float(r["peak_rss_bytes"]) / MB for r in mine], marker="o", label=store)
        ax_cpu.plot(ns, [float(r["round_cpu_s_median"]) for r in mine], marker="o", label=store)
    for ax, title, label in (
        (ax_mem, "Peak RSS vs registered clients", "peak RSS MB (process)"),
        (ax_cpu, "Round time vs registered clients", "CPU s per round (median)"),
    ):
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("registered clients (ILoRA-S, all holding state)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(title="fed.client_store", fontsize=8)
    fig.tight_layout()
    return save_png(fig, img, "engine-scale", "peak RSS and round time vs registered clients")


def _workload(meta: Mapping[str, Any]) -> str:
    """Return the method, partition and examples per client of every scale run."""
    work = meta.get("scale_workload")
    if not work:
        return "method and partition not recorded"
    name = {"ilora-s": "ILoRA-S"}.get(work["algorithm"], work["algorithm"])
    part = str(work["partition"]).upper() if work["partition"] == "iid" else work["partition"]
    return f"{name}, {part} shares of {work['examples_per_client']} synthetic examples per client"


def render(src: Path, img: Path) -> list[str]:
    """Return the scale blocks of the engine section (writes ``engine-scale.png``)."""
    rows = sorted(read_csv(src / "scale.csv"), key=lambda r: (int(r["clients"]), r["store"]))
    meta = read_meta(src)
    plan = meta.get("plan", {})
    median_state = statistics.median(float(r["state_bytes_per_client"]) for r in rows)
    return [
        *section_head("### Registered clients: peak memory and round time", meta),
        f"`{plan.get('scale_config', '?')}` with "
        f"`{' '.join(plan.get('scale_overrides', []))}`, {_workload(meta)}, "
        f"{plan.get('scale_sampled', '?')} clients sampled per round, "
        f"{plan.get('scale_rounds', '?')} rounds, each count and store in a fresh process. "
        "Before the rounds every client is given a state of ILoRA-S's shapes "
        f"({median_state / 1024:.1f} KiB of control variates), as after a run in which every "
        "client has been sampled; MB = 2^20 bytes.",
        md_table(HEADERS, [_row(r) for r in rows]).strip(),
        " ".join(_verdicts(rows)),
        _plot(rows, img),
    ]
