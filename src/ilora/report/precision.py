"""Render ``results/precision/`` (``ilora bench precision``) as a RESULTS.md section.

Reads ``runs.csv`` and ``meta.json`` only. For each method, the paired difference bf16 − fp32
of the final global (and personal) accuracy over the seeds both precisions finished, in
points, with its 95% Student-t interval (``ilora.report.stats``). Issue 15's rule: the default
``train.precision`` becomes ``auto`` only if every interval lies within ±1 point.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from ilora.report._plot import new_figure
from ilora.report._plot import save_with_legend
from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head
from ilora.report.stats import Interval
from ilora.report.stats import interval_within
from ilora.report.stats import mean_ci
from ilora.report.stats import paired

BOUND = 1.0  # points: every interval within ±BOUND for auto to become the default
METRICS = {"final_accuracy": "global", "personal_accuracy": "personal"}


def by_method(
    rows: Sequence[Mapping[str, str]], col: str
) -> dict[str, dict[str, dict[int, float]]]:
    """Return ``{method: {precision: {seed: 100 * value}}}`` of the rows' column ``col``."""
    out: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        value = float(r[col]) if r[col] != "" else math.nan
        out[r["algorithm"]][r["precision"]][int(r["seed"])] = 100 * value
    return out


def within(iv: Interval) -> bool:
    """Return True if the interval exists and lies within ±:data:`BOUND` points (``stats``)."""
    return interval_within(iv, BOUND)


def _rows(rows: Sequence[Mapping[str, str]]) -> tuple[list[list[str]], list[Interval]]:
    body, intervals = [], []
    walls = by_method(rows, "wall_s")
    for col, label in METRICS.items():
        for method, cell in sorted(by_method(rows, col).items()):
            fp32, bf16 = cell.get("fp32", {}), cell.get("bf16", {})
            diff = paired(bf16, fp32)
            if col == "final_accuracy" or diff.n:
                intervals.append(diff)
            seeds = [s for s in fp32 if s in bf16]
            ratio = [walls[method]["fp32"][s] / walls[method]["bf16"][s] for s in seeds]
            body.append([
                method, label, str(diff.n), mean_ci(fp32.values()).text(1),
                mean_ci(bf16.values()).text(1), diff.text(2, signed=True),
                "yes" if within(diff) else ("n/a" if diff.n < 2 else "NO"),
                f"{statistics.median(ratio):.2f}x" if ratio else "",
            ])  # fmt: skip
    return body, intervals


def _plot(rows: Sequence[Mapping[str, str]], img: Path) -> str:
    fig, ax = new_figure(
        "bf16 − fp32 final global accuracy, paired by seed (95% t-interval)",
        "method",
        "difference (points)",
    )
    cells = sorted(by_method(rows, "final_accuracy").items())
    for x, (_, cell) in enumerate(cells):
        iv = paired(cell.get("bf16", {}), cell.get("fp32", {}))
        if iv.n >= 2:
            ax.errorbar([x], [iv.mean], yerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="o")
        elif iv.n == 1:
            ax.plot([x], [iv.mean], "o")
    ax.axhspan(-BOUND, BOUND, alpha=0.15, label=f"±{BOUND:g} point")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(cells)), [m for m, _ in cells])
    return save_with_legend(fig, ax, img, "precision-diff", "bf16 minus fp32 accuracy per method")


def render(src: Path, img: Path) -> str:
    """Return the precision section (writes ``precision-diff.png`` into ``img``)."""
    meta = read_meta(src)
    rows = read_csv(src / "runs.csv")
    body, intervals = _rows(rows)
    headers = ["method", "accuracy", "paired seeds", "fp32 % (95% CI)", "bf16 % (95% CI)",
               "bf16 − fp32 points (95% CI)", f"within ±{BOUND:g}",
               "wall fp32 / bf16 (median)"]  # fmt: skip
    if all(within(iv) for iv in intervals):
        verdict = f"Every interval lies within ±{BOUND:g} point: the default may become `auto`."
    else:
        verdict = (
            f"Not every interval lies within ±{BOUND:g} point (or some method has fewer than two "
            "paired seeds, hence no interval): the default `train.precision` stays `fp32`."
        )
    blocks = [
        *section_head("## Mixed precision: fp32 against bf16 on the demo", meta),
        "The demo (`configs/demo.yaml`) in `train.precision: fp32` and `bf16` with the same "
        "seeds; difference = bf16 − fp32 of each seed's final accuracy (whole test split; "
        "personal: the clients' own test shares), in points, with its 95% Student-t interval "
        "over the seeds both finished. Wall ratio: the same run's seconds, fp32 over bf16, on a "
        "shared machine.",
        md_table(headers, body).strip(),
        verdict,
        _plot(rows, img),
    ]
    return "\n\n".join(b for b in blocks if b) + "\n"
