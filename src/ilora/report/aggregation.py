"""Render ``results/aggregation/`` (``ilora bench aggregation``) as a RESULTS.md section.

Reads ``aggregation.csv`` (one row per timed ``aggregate`` call), ``checks.csv`` and
``meta.json`` only. Medians are over the repeats of one (method, d, clients) cell. The target
of issue 6 is read at d = 4096 with 12 clients: ILoRA's factor-space step against the two dense
forms (time ratio >= 40) and its peak extra memory against the stacked factors (ratio < 2).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.ticker import NullFormatter
from matplotlib.ticker import ScalarFormatter

from ilora.report._aggregation_text import FACTOR
from ilora.report._aggregation_text import Key
from ilora.report._aggregation_text import checks
from ilora.report._aggregation_text import extremes
from ilora.report._aggregation_text import growth
from ilora.report._aggregation_text import load_note
from ilora.report._aggregation_text import ranks_text
from ilora.report._aggregation_text import secs
from ilora.report._plot import new_figure
from ilora.report._plot import save_png
from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head

MB = 2**20
DENSE_FORMS = ("ilora:qr_literal", "ilora:dense_svd")
FORM_LABELS = {
    "ilora": "factor space (ILoRA default)",
    "ilora:qr_literal": "dense QR of ΔW (qr_literal)",
    "ilora:dense_svd": "dense SVD of ΔW (reference)",
}


def _cells(rows: Sequence[Mapping[str, str]]) -> dict[Key, dict[str, Any]]:
    """Return per (method, d, clients): median/min/max seconds, median peak, stacked bytes."""
    grouped: dict[Key, list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        grouped[(r["method"], int(r["d"]), int(r["clients"]))].append(r)
    out = {}
    for key, rs in grouped.items():
        secs = [float(r["seconds"]) for r in rs]
        out[key] = {
            "median": statistics.median(secs),
            "min": min(secs),
            "max": max(secs),
            "repeats": len(secs),
            "peak": statistics.median(float(r["peak_extra_bytes"]) for r in rs),
            "stacked": float(rs[0]["stacked_bytes"]),
            "ranks": rs[0]["ranks"],
        }
    return out


def _target(cells: Mapping[Key, Mapping[str, Any]], d: int, k: int) -> str:
    """Return the target table and the sentences on the two ratios."""
    if any((m, d, k) not in cells for m in (FACTOR, *DENSE_FORMS)):
        return (
            f"The target setting (d = {d}, {k} clients, ILoRA and both dense forms) was not "
            "measured in this run.\n"
        )
    base = cells[(FACTOR, d, k)]
    body = []
    for m in (FACTOR, *DENSE_FORMS):
        c = cells[(m, d, k)]
        body.append(
            [
                FORM_LABELS[m],
                secs(c["median"]),
                secs(c["min"]),
                secs(c["max"]),
                f"{c['median'] / base['median']:.1f}x",
                f"{c['peak'] / MB:.1f}",
                f"{c['peak'] / c['stacked']:.2f}",
            ]
        )
    headers = [
        "form",
        "median s",
        "min s",
        "max s",
        "time / factor space",
        "peak extra MB",
        "peak / stacked factors",
    ]
    speedups = {m: cells[(m, d, k)]["median"] / base["median"] for m in DENSE_FORMS}
    slowest_ok = min(speedups.values()) >= 40
    mem = base["peak"] / base["stacked"]
    text = (
        f"At d = {d} with {k} clients (Σr = {int(base['stacked'] / (16 * d))}), ILoRA's "
        f"factor-space aggregation is {speedups['ilora:qr_literal']:.0f}x faster than the dense "
        f"QR and {speedups['ilora:dense_svd']:.0f}x faster than the dense SVD (medians of "
        f"{base['repeats']}): the >= 40x target is {'met' if slowest_ok else 'NOT met'}. Its peak "
        f"extra memory is {base['peak'] / MB:.1f} MB, {mem:.2f}x the stacked float64 factors "
        f"({base['stacked'] / MB:.2f} MB): the < 2x target is {'met' if mem < 2 else 'NOT met'}."
    )
    return md_table(headers, body) + "\n" + text


def _grid(
    cells: Mapping[Key, Mapping[str, Any]], axis: str, fixed: int, values: Sequence[int], what: str
) -> tuple[str, dict[str, tuple[list[float], list[float]]]]:
    """Return a method x values table of ``what`` (median s or peak MB) and the plot series."""
    methods = sorted({m for m, _, _ in cells})
    series: dict[str, tuple[list[float], list[float]]] = {}
    body = []
    for m in methods:
        xs, ys, row = [], [], [m]
        for v in values:
            key = (m, v, fixed) if axis == "d" else (m, fixed, v)
            if key not in cells:
                row.append("")
                continue
            y = cells[key]["median"] if what == "time" else cells[key]["peak"] / MB
            xs.append(float(v))
            ys.append(y)
            row.append(secs(y) if what == "time" else f"{y:.1f}")
        series[m] = (xs, ys)
        body.append(row)
    label = "d =" if axis == "d" else "clients ="
    return md_table(["method", *(f"{label} {v}" for v in values)], body), series


def _figure(
    series: dict[str, tuple[list[float], list[float]]],
    img: Path,
    name: str,
    title: str,
    xlabel: str,
    ylabel: str,
) -> str:
    """Log-log lines per method; ILoRA's forms drawn thick; non-positive values left out."""
    fig, ax = new_figure(title, xlabel, ylabel, (9.5, 5.5))
    cmap = colormaps["tab20"]
    for i, (label, (xs, ys)) in enumerate(sorted(series.items())):
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
        if not pts:
            continue
        bold = label in FORM_LABELS
        ax.plot(
            [x for x, _ in pts],
            [y for _, y in pts],
            marker="o",
            markersize=4 if bold else 3,
            linewidth=2.5 if bold else 1.0,
            linestyle="-" if i < 10 or bold else "--",
            color="black" if label == FACTOR else cmap(i % 20),
            label=FORM_LABELS.get(label, label),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted({x for xs, _ in series.values() for x in xs}))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_png(fig, img, name, title)


def _head(src: Path, meta: Mapping[str, Any], cells: Mapping[Key, Mapping[str, Any]]) -> list[str]:
    """Return the title, command, setting and the ILoRA target table."""
    plan = meta.get("plan", {})
    target = meta.get("target")
    return [
        *section_head("## Aggregation cost: server time and peak memory per method", meta),
        "Every method's `aggregate` on its own round-1 uploads for one d x d layer (made by its "
        "own client path: download, client init, one local step, upload), clients' ranks "
        f"cycling {ranks_text(meta, cells)}, "
        f"{plan.get('repeats', '?')} timed calls after a warm-up, "
        f"{plan.get('threads', '?')} thread(s). Peak extra memory = growth of the resident "
        "set's high-water mark during the call. MB = 2^20 bytes. Round 1 only: a server step "
        "that changes in later rounds is shown in its round-1 form (FedLEASE's clustering at "
        "the end of its warm-up, FedLoRU's periodic merge are not in these numbers)."
        + load_note(meta),
        "### ILoRA: factor space vs dense (target setting)",
        _target(cells, int(target["d"]), int(target["clients"])).strip()
        if target
        else "The target setting was not recorded.",
        *checks(src),
    ]


def _vs_d(cells: Mapping[Key, Mapping[str, Any]], img: Path, dims: list[int], k: int) -> list[str]:
    """Return the time and memory tables and figures against the layer size at ``k`` clients."""
    table, series = _grid(cells, "d", k, dims, "time")
    time_title = f"Server aggregation time vs layer size ({k} clients)"
    time_y = "median seconds per aggregate (log)"
    memory, memory_series = _grid(cells, "d", k, dims, "memory")
    memory_title = f"Peak extra memory of aggregation vs layer size ({k} clients)"
    x = "layer size d (d x d)"
    return [
        f"### Time vs layer size ({k} clients), median seconds",
        table.strip(),
        _figure(series, img, "aggregation-time-vs-d", time_title, x, time_y),
        extremes(cells, dims[-1], k),
        f"### Peak extra memory vs layer size ({k} clients), MB",
        memory.strip(),
        _figure(
            memory_series, img, "aggregation-memory-vs-d", memory_title, x, "peak extra MB (log)"
        ),
    ]


def _vs_clients(
    cells: Mapping[Key, Mapping[str, Any]], img: Path, meta: Mapping[str, Any], d: int
) -> list[str]:
    """Return the time table and figure against the number of clients at layer size ``d``."""
    clients = sorted({k for _, dd, k in cells if dd == d})
    table, series = _grid(cells, "clients", d, clients, "time")
    title = f"Server aggregation time vs clients (d = {d})"
    x = f"clients (ranks cycling {ranks_text(meta)})"
    return [
        f"### Time vs number of clients (d = {d}), median seconds",
        table.strip(),
        _figure(series, img, "aggregation-time-vs-clients", title, x, "median seconds (log)"),
        growth(cells, d, clients),
    ]


def render(src: Path, img: Path) -> str:
    """Return the aggregation section (writes ``aggregation-*.png`` into ``img``)."""
    meta = read_meta(src)
    cells = _cells(read_csv(src / "aggregation.csv"))
    plan = meta.get("plan", {})
    dims = sorted({d for _, d, _ in cells})
    blocks = [
        *_head(src, meta, cells),
        *_vs_d(cells, img, dims, int(plan["dims_clients"])),
        *_vs_clients(cells, img, meta, int(plan.get("clients_dim", dims[-1]))),
    ]
    return "\n\n".join(b for b in blocks if b) + "\n"
