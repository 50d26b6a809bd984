"""Run directories read back: ``summary.json``, ``manifest.json`` and ``history.jsonl`` only.

``ilora compare`` and ``ilora export-results`` read finished runs through :func:`read_runs`;
the comparison table itself is :func:`ilora.report._table.comparison_rows`, shared with the
report renderers so both print the same columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any


def null_as_nan(obj: dict[str, Any]) -> dict[str, Any]:
    """Return a record read back from strict JSON with top-level ``null`` values as NaN."""
    return {k: math.nan if v is None else v for k, v in obj.items()}


def read_runs(root: Path) -> list[dict[str, Any]]:
    """Return every run under ``root``: its summary plus ``seed`` and its per-round ``history``."""
    runs = []
    for summary in sorted(root.glob("*/summary.json")):
        run = null_as_nan(json.loads(summary.read_text()))  # a null metric is NaN again
        manifest = json.loads((summary.parent / "manifest.json").read_text())
        lines = (summary.parent / "history.jsonl").read_text().splitlines()
        history = [null_as_nan(json.loads(line)) for line in lines]
        runs.append(
            {**run, "seed": manifest["seed"], "history": history, "dir": summary.parent.name}
        )
    return runs


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Return the comparison rows as CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["algorithm"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
