"""The protocol's machine time per task, from ``meta.json`` (``run_seconds_by_task``).

The budget of the protocol is machine time on this 2-core machine. Each finished run records
its own wall seconds on one worker (``bench.protocol_seconds``); summed per task and phase,
divided by the workers that ran side by side, they give the wall time the task costs when
both workers stay busy. A ``meta.json`` written before the per-task record lists the tasks it
summed together under their joined names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ilora.report._table import md_table

PHASES = ("tune", "horizon", "compare")


def render(meta: Mapping[str, Any]) -> str:
    """Return the per-task machine-time table ("" without ``run_seconds_by_task``)."""
    by_task = meta.get("run_seconds_by_task") or {}
    if not by_task:
        return ""
    workers = int(meta.get("cpus") or 1)
    rows = []
    for tasks, seconds in sorted(by_task.items()):
        total = sum(seconds.values()) / 3600
        hours = [f"{seconds.get(p, 0.0) / 3600:.2f}" for p in PHASES]
        rows.append([tasks.replace(",", ", "), *hours, f"{total:.2f}", f"{total / workers:.2f}"])
    head = ["task", "tune h", "horizon h", "compare h", "runs' hours", f"÷ {workers} workers h"]
    return (
        "Machine time per task: the finished runs' own hours (one worker each) and that time "
        f"spread over the {workers} workers that run side by side, the wall time the task "
        "costs while both stay busy.\n\n" + md_table(head, rows)
    )
