"""Shared reading and formatting helpers for the renderers (stdlib only).

Reading: :func:`read_csv` (rows as ``dict[str, str]``), :func:`read_meta`, :func:`num`.
Formatting: :func:`md_table`, :func:`command_block` (commands as typed today,
:func:`current_command`), :func:`pm` (mean ± std; the statistics are :mod:`stats`).
The comparison table of ``ilora compare`` (:func:`comparison_rows`, :func:`comparison_markdown`)
lives here too, so the command and the demo renderer print the same table.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report.stats import mean_std

NAN = float("nan")
CENTRAL = "centralized"  # the centralized line: the variant name every section reads
BASELINE = "fedit"  # the method every paired difference is also taken against


def read_csv(path: Path) -> list[dict[str, str]]:
    """Return the rows of a CSV with a header row."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_meta(src: Path) -> dict[str, Any]:
    """Return ``src/meta.json`` (an empty dict when absent)."""
    path = src / "meta.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def num(value: str | float | int | None) -> float:
    """Return a CSV cell as a float; empty, missing or ``nan`` cells are NaN."""
    if value is None or value == "":
        return NAN
    return float(value)


def fmt(x: float, digits: int = 2) -> str:
    """Return ``x`` with ``digits`` decimals, or ``n/a`` for NaN."""
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def pm(mean: float, std: float, digits: int = 2) -> str:
    """Return ``mean ± std`` (``n/a`` when the mean is NaN)."""
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Return a markdown table (one header row, left-aligned columns)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# The measurement scripts ``benchmarks/<script>.py`` became ``ilora bench <name>`` with the same
# options; a meta.json written before keeps the command as it ran, shown as typed today.
SCRIPT_COMMANDS = {
    "dp": "dp",
    "faults": "faults",
    "lr_sensitivity": "lr",
    "flower_runtimes": "flower",
    "flower_parity": "flower-parity",
}
_SCRIPT = re.compile(r"^((?:\w+=\S* )*)(?:\S*python\S* )?benchmarks/(\w+)\.py(?=\s|$)")


def current_command(command: str) -> str:
    """Return ``command`` as typed today: a ``benchmarks/<script>.py`` run as ``ilora bench``.

    Environment assignments and options stay; the interpreter in front of the script goes.
    Any other command is returned unchanged.
    """
    found = _SCRIPT.match(command)
    if found is None or found.group(2) not in SCRIPT_COMMANDS:
        return command
    name = SCRIPT_COMMANDS[found.group(2)]
    return f"{found.group(1)}ilora bench {name}{command[found.end() :]}"


def command_block(*commands: str) -> str:
    """Return a fenced ``bash`` block holding the commands (empty when none are given).

    Each command is shown as it is typed today (:func:`current_command`).
    """
    lines = [current_command(c) for c in commands if c]
    return "```bash\n" + "\n".join(lines) + "\n```\n" if lines else ""


def section_head(title: str, meta: Mapping[str, Any]) -> list[str]:
    """Return a section's first blocks: ``title``, the commands behind it, :func:`meta_line`.

    The commands are ``meta["made_by"]`` (the runs), then ``meta["command"]`` (the export).
    """
    commands = [*meta.get("made_by", []), str(meta.get("command", ""))]
    return [title, command_block(*commands).strip(), meta_line(meta)]


def meta_line(meta: Mapping[str, Any]) -> str:
    """Return a one-line description of where the numbers were measured."""
    parts = []
    if meta.get("date"):
        parts.append(f"measured {str(meta['date'])[:10]}")
    if meta.get("cpus"):
        parts.append(f"{meta['cpus']} CPUs")
    if meta.get("torch"):
        parts.append(f"torch {meta['torch']}")
    if meta.get("python"):
        parts.append(f"Python {meta['python']}")
    if meta.get("quick"):
        parts.append("**quick preset: a smoke check, not a measurement**")
    return "; ".join(parts) + "." if parts else ""


def comparison_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per algorithm over its runs, best mean final accuracy first.

    Each run maps ``algorithm``, ``final_accuracy`` (fraction), ``final_personal_accuracy``
    (optional), ``mean_agg_error`` and ``mean_download_error`` (NaN where undefined, or
    absent), ``total_bytes_up``/``_down``,
    ``rounds`` and ``wall_s``. Accuracies come out in percent, bytes per round.
    """
    by_alg: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        by_alg[run["algorithm"]].append(run)
    rows = []
    for alg, group in by_alg.items():
        acc, acc_sd = mean_std(100 * float(r["final_accuracy"]) for r in group)
        pers, pers_sd = mean_std(100 * float(r.get("final_personal_accuracy", NAN)) for r in group)
        err, _ = mean_std(float(r["mean_agg_error"]) for r in group)
        down, _ = mean_std(float(r.get("mean_download_error", NAN)) for r in group)
        rounds = max(1, int(group[0]["rounds"]))
        rows.append(
            {
                "algorithm": alg,
                "seeds": len(group),
                "final_accuracy_mean": acc,
                "final_accuracy_std": acc_sd,
                "personal_accuracy_mean": pers,
                "personal_accuracy_std": pers_sd,
                "mean_agg_error": err,
                "mean_download_error": down,
                "bytes_up_per_round": statistics.fmean(float(r["total_bytes_up"]) for r in group)
                / rounds,
                "bytes_down_per_round": statistics.fmean(
                    float(r["total_bytes_down"]) for r in group
                )
                / rounds,
                "wall_s": statistics.fmean(float(r["wall_s"]) for r in group),
            }
        )
    return sorted(
        rows,
        key=lambda r: -r["final_accuracy_mean"] if not math.isnan(r["final_accuracy_mean"]) else 0,
    )


def comparison_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Return :func:`comparison_rows` as a markdown table (MB = 10^6 bytes).

    Rows that carry ``lr`` (the LoRA rate in words, where the methods' rates differ) get a
    ``LoRA lr`` column after ``seeds``.
    """
    rates = any("lr" in r for r in rows)
    headers = [
        "algorithm",
        "seeds",
        *(["LoRA lr"] if rates else []),
        "final accuracy % (mean ± std)",
        "personalized accuracy %",
        "mean agg_error",
        "mean download_error",
        "MB up / round",
        "MB down / round",
        "wall s",
    ]
    body = [
        [
            r["algorithm"],
            r["seeds"],
            *([r.get("lr", "n/a")] if rates else []),
            pm(r["final_accuracy_mean"], r["final_accuracy_std"]),
            pm(r["personal_accuracy_mean"], r["personal_accuracy_std"]),
            fmt(r["mean_agg_error"], 4),
            fmt(r["mean_download_error"], 4),
            f"{r['bytes_up_per_round'] / 1e6:.3f}",
            f"{r['bytes_down_per_round'] / 1e6:.3f}",
            f"{r['wall_s']:.1f}",
        ]
        for r in rows
    ]
    return md_table(headers, body)


def seeds_words(n: int) -> str:
    """Return "1 seed" or "n seeds"."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def setting_seeds(cell: Mapping[str, Mapping[int, float]], central: str) -> set[int]:
    """Return the seeds of a setting: those of its methods other than ``central``.

    The centralized line runs once and stands for every setting, so it names the seeds only
    where no other method has run.
    """
    fed = [ys for v, ys in cell.items() if v != central] or list(cell.values())
    return {s for ys in fed for s in ys}


def missing_seeds(
    cell: Mapping[str, Mapping[int, float]], seeds: Iterable[int] | None = None
) -> str:
    """Return which series lack a finite value at the setting's ``seeds`` ("" when none).

    ``cell`` maps a method to its value per seed (NaN: a run without a result); ``seeds``
    defaults to those where any method has a value.
    """
    finite = {v: {s for s, x in ys.items() if not math.isnan(x)} for v, ys in cell.items()}
    every = set(seeds) if seeds is not None else set().union(*finite.values())
    short = {v: sorted(every - s) for v, s in sorted(finite.items()) if every - s}
    if not short:
        return ""
    words = "; ".join(f"{v} ({', '.join(map(str, s))})" for v, s in short.items())
    return f"Seeds without a result (not run yet, stopped or diverged): {words}."
