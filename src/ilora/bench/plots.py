"""Figures, one function each; matplotlib's Agg backend; each returns its ``Figure``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _per_round(runs: list[dict[str, Any]], metric: str) -> dict[str, dict[int, list[float]]]:
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for rec in run["history"]:
            if metric in rec:
                curves[run["algorithm"]][rec["round"]].append(float(rec[metric]))
    return curves


def metric_vs_round(runs: list[dict[str, Any]], metric: str, title: str, ylabel: str) -> Figure:
    """Plot the seed-mean of ``metric`` per round, one line per algorithm."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for alg, by_round in sorted(_per_round(runs, metric).items()):
        rounds = sorted(by_round)
        means = [sum(by_round[r]) / len(by_round[r]) for r in rounds]
        ax.plot(
            rounds, [100 * m if metric == "accuracy" else m for m in means], marker="o", label=alg
        )
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
