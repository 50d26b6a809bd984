"""Machine time of the protocol's runs: the summed wall seconds of finished runs, per task.

``meta.json`` records them per task and phase (``run_seconds_by_task``) and summed per phase
(``run_seconds_by_phase``, what RESULTS' budget line reads). Tasks whose runs are not on disk
keep the seconds an earlier ``meta.json`` holds, like their rows (``protocol_results.write``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PHASES = ("tune", "horizon", "compare")


def run_seconds(runs: Path, suffix: str = "") -> dict[str, dict[str, float]]:
    """Return ``{task: {phase: seconds}}``: the summed wall time of its finished runs.

    One worker each; unlike an invocation's wall time, this counts the runs of an invocation
    that was stopped. Only the phase directories of the tuning setting ``suffix`` count.
    """
    out: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        for summary in sorted(runs.glob(f"*/{phase}{suffix}/**/summary.json")):
            task = summary.relative_to(runs).parts[0]
            seconds = float(json.loads(summary.read_text()).get("wall_s", 0.0))
            held = out.setdefault(task, {})
            held[phase] = round(held.get(phase, 0.0) + seconds, 1)
    return out


def by_task(old: dict[str, Any], runs: Path, suffix: str) -> dict[str, dict[str, float]]:
    """Return :func:`run_seconds` of ``runs`` plus the tasks of the ``old`` meta not on disk.

    A ``meta.json`` written before per-task records holds one sum for all its tasks; it stays
    under their joined names until one of them is rebuilt from disk.
    """
    fresh = run_seconds(runs, suffix)
    held = old.get("run_seconds_by_task")
    if held is None and old.get("run_seconds_by_phase"):
        held = {",".join(sorted(old.get("tasks", []))): old["run_seconds_by_phase"]}
    kept = {k: v for k, v in (held or {}).items() if not set(k.split(",")) & set(fresh)}
    return {**kept, **fresh}


def by_phase(by_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """Return ``{phase: seconds}`` summed over the tasks of :func:`by_task`."""
    out: dict[str, float] = {}
    for phases in by_task.values():
        for phase, seconds in phases.items():
            out[phase] = round(out.get(phase, 0.0) + seconds, 1)
    return out
