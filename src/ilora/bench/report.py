"""Tables from run directories: reads ``summary.json``/``history.jsonl`` only, never trains.

The table itself (rows and markdown) is shared with the report renderers
(:mod:`ilora.report._table`), so ``ilora compare`` and docs/RESULTS.md print the same columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ilora.report._table import comparison_markdown as markdown
from ilora.report._table import comparison_rows

__all__ = ["comparison_rows", "markdown", "null_as_nan", "read_runs", "to_csv"]


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
