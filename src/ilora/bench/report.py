"""Tables from run directories: reads ``summary.json``/``history.jsonl`` only, never trains."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def read_runs(root: Path) -> list[dict[str, Any]]:
    """Return every run under ``root``: its summary plus ``seed`` and its per-round ``history``."""
    runs = []
    for summary in sorted(root.glob("*/summary.json")):
        run = json.loads(summary.read_text())
        manifest = json.loads((summary.parent / "manifest.json").read_text())
        history = [
            json.loads(line) for line in (summary.parent / "history.jsonl").read_text().splitlines()
        ]
        runs.append(
            {**run, "seed": manifest["seed"], "history": history, "dir": summary.parent.name}
        )
    return runs


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def comparison_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per algorithm: accuracy mean/std over seeds, agg_error, bytes, time."""
    by_alg: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_alg[run["algorithm"]].append(run)
    rows = []
    for alg, group in by_alg.items():
        acc, acc_sd = _mean_std([100 * r["final_accuracy"] for r in group])
        err, _ = _mean_std([r["mean_agg_error"] for r in group])
        pers, pers_sd = _mean_std([100 * r.get("final_personal_accuracy", math.nan) for r in group])
        rounds = max(1, group[0]["rounds"])
        rows.append(
            {
                "algorithm": alg,
                "seeds": len(group),
                "final_accuracy_mean": acc,
                "final_accuracy_std": acc_sd,
                "personal_accuracy_mean": pers,
                "personal_accuracy_std": pers_sd,
                "mean_agg_error": err,
                "bytes_up_per_round": statistics.fmean(r["total_bytes_up"] for r in group) / rounds,
                "bytes_down_per_round": statistics.fmean(r["total_bytes_down"] for r in group)
                / rounds,
                "wall_s": statistics.fmean(r["wall_s"] for r in group),
            }
        )
    return sorted(
        rows,
        key=lambda r: -r["final_accuracy_mean"] if not math.isnan(r["final_accuracy_mean"]) else 0,
    )


def _fmt(x: float, digits: int) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _pm(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """Return the comparison as a markdown table."""
    lines = [
        "| algorithm | seeds | final accuracy % (mean ± std) | personalized accuracy % | "
        "mean agg_error | MB up / round | MB down / round | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['algorithm']} | {r['seeds']} | "
            f"{_pm(r['final_accuracy_mean'], r['final_accuracy_std'])} | "
            f"{_pm(r['personal_accuracy_mean'], r['personal_accuracy_std'])} | "
            f"{_fmt(r['mean_agg_error'], 4)} | "
            f"{r['bytes_up_per_round'] / 1e6:.3f} | {r['bytes_down_per_round'] / 1e6:.3f} | "
            f"{r['wall_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["algorithm"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
