"""Result files of a benchmark (``results/<name>/``): tidy CSVs and ``meta.json``.

A CSV has a header row and one row per measurement; ``meta.json`` records how the numbers were
made: ``{"command", "date", "python", "torch", "cpus", "quick", ...}``. Renderers in
``ilora.report`` read only these files.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def command_line() -> str:
    """Return this process's command line as a user would type it (``ilora ...`` when so run)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "ilora":
        argv[0] = "ilora"
    return shlex.join(argv)


def write_meta(out: Path, quick: bool, **extra: Any) -> dict[str, Any]:
    """Write ``out/meta.json`` for a benchmark run and return it."""
    import torch  # only for its version; the callers have imported it already

    meta = {
        "command": command_line(),
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
