"""Result files of a benchmark (``results/<name>/``): tidy CSVs and ``meta.json``.

A CSV has a header row and one row per measurement; ``meta.json`` records how the numbers were
made: ``{"command", "date", "python", "torch", "cpus", "quick", ...}``. Renderers in
``ilora.report`` read only these files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import TypeVar

Row = TypeVar("Row")
IL_MAIN = ("ilora", "__main__.py")


def results_dir(name: str, quick: bool, out: Path | None = None) -> Path:
    """Return where benchmark ``name`` writes its result files: ``out`` when given.

    Else ``results/<name>``, or with ``quick`` ``runs/quick/<name>``, so a smoke run never
    overwrites committed results.
    """
    return out or Path("runs/quick" if quick else "results", name)


def command_line() -> str:
    """Return this process's command line as a user would type it (``ilora ...`` when so run)."""
    argv = list(sys.argv)
    if argv and (Path(argv[0]).name == "ilora" or Path(argv[0]).parts[-2:] == IL_MAIN):
        argv[0] = "ilora"  # the console script, or ``python -m ilora``
    return shlex.join(argv)


def thread_launcher() -> str:
    """Return ``OMP_NUM_THREADS=<n>`` when this process was started with it set, else ``""``.

    A measurement whose numbers depend on the thread count records it before its command.
    """
    threads = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={threads}" if threads else ""


def write_meta(out: Path, quick: bool, launcher: str = "", **extra: Any) -> dict[str, Any]:
    """Write ``out/meta.json`` for a benchmark run and return it.

    ``launcher`` goes before the command line: what the command is run with, e.g.
    ``OMP_NUM_THREADS=1`` (:func:`thread_launcher`).
    """
    import torch  # only for its version; the callers have imported it already

    meta = {
        "command": f"{launcher} {command_line()}" if launcher else command_line(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "quick": quick,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),  # a shared machine's noise
        **extra,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (dicts with the same keys, in order) as a CSV with a header row.

    Raises:
        ValueError: if there are no rows or their keys differ.

    """
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    columns = list(rows[0])
    if any(list(r) != columns for r in rows):
        raise ValueError(f"rows for {path} do not share the columns {columns}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def merge_rows(
    path: Path, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Return ``rows`` plus the rows of ``path`` that none of ``rows`` replaces.

    An old row is replaced when a new row has the same values in ``keys`` (compared as the
    CSV writes them), so a result file rebuilt from what is on disk keeps every row it cannot
    rebuild (a run on another machine, a deleted run directory): nothing written is lost. Kept
    rows take the columns of ``rows`` (blank where they had none); the result is ordered by
    the first key, stably.
    """
    old = read_rows(path) if path.is_file() else []
    fresh = {tuple(str(r[k]) for k in keys) for r in rows}
    kept = [r for r in old if tuple(r.get(k, "") for k in keys) not in fresh]
    columns = list(rows[0]) if rows else list(old[0]) if old else []
    merged = [*({c: r.get(c, "") for c in columns} for r in kept), *map(dict, rows)]
    return sorted(merged, key=lambda r: str(r[keys[0]]))


def read_rows(path: Path) -> list[dict[str, str]]:
    """Return the rows of a result CSV (a header row, then one row per measurement)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_results(
    out: Path,
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    quick: bool,
    launcher: str = "",
    **extra: Any,
) -> list[str]:
    """Write every table, then ``out/meta.json``; return the file names written, in order.

    ``tables`` maps a file name to its rows (:func:`write_rows`); ``launcher`` and ``extra``
    go to :func:`write_meta`.
    """
    for name, rows in tables.items():
        write_rows(out / name, rows)
    write_meta(out, quick, launcher, **extra)
    return [*tables, "meta.json"]


def blank_missing(value: Any) -> Any:
    """Return ``value`` as a CSV cell: ``""`` for None and NaN (a metric that was not measured)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def summary_columns(
    summary: Mapping[str, Any],
    bytes_columns: tuple[str, str] = ("total_bytes_up", "total_bytes_down"),
) -> dict[str, Any]:
    """Return the outcome columns of a finished run's ``summary.json`` for a ``runs.csv`` row.

    Accuracies, mean aggregation error, bytes up and down (named ``bytes_columns``), rounds and
    wall seconds (3 decimals); an unmeasured metric is blank (:func:`blank_missing`).
    """
    up, down = bytes_columns
    return {
        "final_accuracy": summary["final_accuracy"],
        "personal_accuracy": blank_missing(summary.get("final_personal_accuracy")),
        "best_accuracy": summary["best_accuracy"],
        "mean_agg_error": blank_missing(summary["mean_agg_error"]),
        "mean_download_error": blank_missing(summary.get("mean_download_error")),
        up: summary["total_bytes_up"],
        down: summary["total_bytes_down"],
        "rounds": summary["rounds"],
        "wall_s": round(float(summary["wall_s"]), 3),
    }


def round_metric_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return a ``history.jsonl`` record's metric columns for a ``rounds.csv`` row.

    Accuracy, personal accuracy, aggregation and download error; blank where not measured.
    """
    return {
        key: blank_missing(record.get(key))
        for key in ("accuracy", "personal_accuracy", "agg_error", "download_error")
    }


def labelled_runs(runs: Path, labels: Sequence[str], row: Callable[[Path, str], Row]) -> list[Row]:
    """Return ``row(run_dir, label)`` for every finished run under ``runs/<label>/``.

    A finished run is a directory holding ``summary.json``; labels are read in order, runs in
    name order.

    Raises:
        FileNotFoundError: if no run has finished under any label.

    """
    rows = [
        row(summary.parent, label)
        for label in labels
        for summary in sorted((runs / label).glob("*/summary.json"))
    ]
    if not rows:
        raise FileNotFoundError(f"no finished run under {runs}/<{'|'.join(labels)}>")
    return rows
