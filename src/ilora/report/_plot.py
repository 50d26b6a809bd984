"""Shared figure helpers for the renderers: matplotlib's Agg backend, one PNG per figure.

Every figure has a title, labelled axes and (for several lines) a legend, so it reads without
the text around it. Renderers save with :func:`save_png`, which returns the markdown image link
relative to ``docs/`` (``img/<name>.png``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [  # plt too: renderers draw custom figures with it (Agg is selected above)
    "DPI",
    "accuracy_baselines",
    "Series",
    "line_chart",
    "metric_vs_round",
    "new_figure",
    "plt",
    "round_means",
    "save_png",
]

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]  # label -> (xs, ys)
DPI = 120


def new_figure(
    title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (7, 4.5)
) -> tuple[Figure, Axes]:
    """Return a fresh figure and its axes with the title, axis labels and a light grid."""
    fig, ax = plt.subplots(figsize=size)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _colors(n: int) -> list[Any]:
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def line_chart(
    series: Series,
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    logx: bool = False,
    logy: bool = False,
    marker: str = "o",
) -> Figure:
    """Plot one line per label (sorted by label); the legend goes outside when there are many."""
    many = len(series) > 8
    fig, ax = new_figure(title, xlabel, ylabel, (9.5, 5) if many else (7, 4.5))
    lines = zip(_colors(len(series)), sorted(series.items()), strict=True)
    for i, (color, (label, (xs, ys))) in enumerate(lines):
        style = "-" if i < 10 else "--"  # tab20 pairs similar hues: the second ten are dashed
        ax.plot(list(xs), list(ys), style, marker=marker, markersize=3, label=label, color=color)
    if xlabel == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("symlog", linthresh=1e-3)
    if many:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_with_legend(fig: Figure, ax: Axes, img: Path, name: str, alt: str) -> str:
    """Add ``ax``'s legend (font size 8), lay ``fig`` out tightly and :func:`save_png` it."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, img, name, alt)


def save_png(fig: Figure, img: Path, name: str, alt: str) -> str:
    """Write ``img/<name>.png`` and return its markdown link as seen from ``docs/RESULTS.md``."""
    img.mkdir(parents=True, exist_ok=True)
    fig.savefig(img / f"{name}.png", dpi=DPI)
    plt.close(fig)
    return f"![{alt}](img/{name}.png)"


def _per_round(runs: Sequence[Mapping[str, Any]], metric: str) -> dict[str, dict[int, list[float]]]:
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for rec in run["history"]:
            if rec.get(metric) is not None:
                curves[run["algorithm"]][int(rec["round"])].append(float(rec[metric]))
    return curves


def round_means(
    runs: Sequence[Mapping[str, Any]], metric: str, scale: float = 1.0
) -> dict[str, tuple[list[float], list[float]]]:
    """Return ``{algorithm: (rounds, seed-mean of metric * scale)}`` from runs with a history.

    Each run is a mapping with ``algorithm`` and ``history`` (a list of per-round mappings
    holding ``round`` and, where measured, ``metric``).
    """
    out = {}
    for alg, by_round in _per_round(runs, metric).items():
        rounds = sorted(by_round)
        means = [scale * sum(by_round[r]) / len(by_round[r]) for r in rounds]
        out[alg] = ([float(r) for r in rounds], means)
    return out


def accuracy_baselines(classes: int, majority_share: float) -> dict[str, float]:
    """Return the accuracy (in %) of guessing uniformly and of always answering the majority.

    Args:
        classes: number of classes ``K`` (chance is ``100 / K``).
        majority_share: the largest class's share of the test split, in ``[0, 1]``.

    """
    return {
        f"chance (1/{classes})": 100.0 / max(classes, 1),
        "majority class": 100.0 * majority_share,
    }


def metric_vs_round(
    runs: Sequence[Mapping[str, Any]],
    metric: str,
    title: str,
    ylabel: str,
    baselines: Mapping[str, float] | None = None,
) -> Figure:
    """Plot the seed-mean of ``metric`` per round, one line per algorithm (accuracy in %).

    ``baselines`` (label -> value, e.g. :func:`accuracy_baselines`) are drawn as grey
    horizontal lines, so a curve reads against chance and the majority class.
    """
    scale = 100.0 if metric == "accuracy" else 1.0
    fig = line_chart(round_means(runs, metric, scale), title, "round", ylabel)
    if baselines:
        ax = fig.axes[0]
        for (label, value), style in zip(sorted(baselines.items()), (":", "--"), strict=False):
            ax.axhline(value, color="0.45", linestyle=style, linewidth=1.2, label=label)
        many = len(ax.get_lines()) > 10
        if many:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            ax.legend(fontsize=8)
    return fig
