"""What an invocation of the protocol has left to run, and for how long: ``--phase plan``.

The whole protocol takes tens of hours on this machine (RESULTS, "Machine time per task"), so
it runs in pieces. Before a piece, ``ilora bench protocol --phase plan`` (with the piece's own
``--tasks``, ``--variants``, ``--ranks``, ``--alphas`` and ``--seeds``) counts, per task and
phase, the runs the invocation holds, how many are decided (a finished or stopped run of the
identical config, restored from the records too) and how many are left, and estimates the
left ones' wall time on ``--workers``::

    hours = sum over the left runs of their expected wall seconds / workers / 3600

A left run is expected to take the mean wall time of its variant's finished runs in the same
phase of the invocation (methods differ: ILoRA-S's runs take about twice FedIT's); a variant
with none there takes the phase's mean over this task's finished runs on disk, else of any of
its phases, else of the task's comparison runs in the result files (``runs.csv``'s
``wall_s``: what a fresh clone, whose records may not hold every run, was measured at). Means,
not medians: a total is a count times a mean. It runs nothing and writes no result file (the
records are restored into ``runs/`` first, as for every phase).

What the runs themselves decide is said, not guessed: tuning may add up to
:data:`ilora.bench.tuning.MAX_EXTENSIONS` rates past each edge of a variant's grid; before every
rate is chosen, or before the horizon runs end, the comparison's runs are counted but none can
be known decided (their config holds the rates and the horizon).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from ilora.bench import phases
from ilora.bench import tuning
from ilora.bench.jobs import Job
from ilora.bench.protocol import Protocol
from ilora.bench.protocol import Variant

PHASES = ("tune", "horizon", "compare")
Rows = Sequence[Mapping[str, str]]
Runs = Sequence[tuple[Variant, Job]]


@dataclass(frozen=True)
class Piece:
    """One task's phase as an invocation holds it."""

    task: str
    phase: str
    runs: int
    decided: int
    left_seconds: float | None  # the left runs' expected wall seconds (None: nothing to time)
    timed_by: str  # how the left runs are timed
    open_end: str = ""  # what the runs may still add or what the count cannot know yet

    @property
    def left(self) -> int:
        return self.runs - self.decided

    def hours(self, workers: int) -> float | None:
        """Return the left runs' wall time on ``workers`` (None: nothing to time them by)."""
        if self.left_seconds is None:
            return None
        return self.left_seconds / workers / 3600


def plan(proto: Protocol, task: str, recorded: Rows = ()) -> list[Piece]:
    """Return ``task``'s tune, horizon and compare pieces (reads run directories only).

    ``recorded``: the rows of the result files' ``runs.csv``, the last source of run seconds.
    """
    timing = _Timing(proto, task, recorded)
    try:
        rates: dict[str, float] | None = phases.tuned_rates(proto, task)
    except ValueError:
        rates = None
    edges = f"each variant's best rate at an edge adds up to {tuning.MAX_EXTENSIONS} runs per edge"
    pieces = [timing.piece("tune", phases.tuning_runs(proto, task), "" if rates else edges)]
    if rates is None:
        stand_in = {v.label: proto.low_rate for v in proto.variants}
        compare = list(proto.compare_runs(task, stand_in, proto.max_rounds))
        horizon_runs = min(2, len(proto.variants))
        pieces.append(timing.counted("horizon", horizon_runs, "the rates are not chosen"))
        pieces.append(timing.counted("compare", len(compare), "the rates are not chosen"))
        return pieces
    runs = phases.horizon_jobs(proto, task, rates)
    pieces.append(timing.piece("horizon", runs))
    if not all(job.decided() for _, job in runs):
        compare = list(proto.compare_runs(task, rates, proto.max_rounds))
        pieces.append(timing.counted("compare", len(compare), "the horizon is not found"))
        return pieces
    rounds = phases.found_horizon(proto, runs).rounds
    pieces.append(timing.piece("compare", list(proto.compare_runs(task, rates, rounds))))
    return pieces


@dataclass(frozen=True)
class _Timing:
    """Makes ``task``'s pieces and times their left runs (see the module's docstring)."""

    proto: Protocol
    task: str
    recorded: Rows

    def piece(self, phase: str, runs: Runs, note: str = "") -> Piece:
        decided = [job.decided() for _, job in runs]
        pairs = list(zip(runs, decided, strict=True))
        left = [variant for (variant, _), done in pairs if not done]
        own = _variant_means([run for run, done in pairs if done])
        fallback, basis = self.run_seconds(phase)
        by_own = [own[v.label] for v in left if v.label in own]
        rest = len(left) - len(by_own)
        seconds = None if rest and fallback is None else sum(by_own) + rest * (fallback or 0.0)
        timed_by = _timed_by(len(by_own), rest, fallback, basis)
        return Piece(self.task, phase, len(runs), sum(decided), seconds, timed_by, note)

    def counted(self, phase: str, runs: int, why: str) -> Piece:
        """Return a piece whose runs are counted but cannot be known decided yet (``why``)."""
        fallback, basis = self.run_seconds(phase)
        seconds = None if fallback is None else runs * fallback
        note = f"none known decided: {why} yet"
        timed_by = _timed_by(0, runs, fallback, basis)
        return Piece(self.task, phase, runs, 0, seconds, timed_by, note)

    def run_seconds(self, phase: str) -> tuple[float | None, str]:
        """Return the mean wall seconds of a finished run of ``phase`` and what it is over."""
        own = self._on_disk((phase,))
        if own:
            return statistics.fmean(own), f"mean of its {len(own)} finished runs"
        every = self._on_disk(PHASES)
        if every:
            return statistics.fmean(every), f"mean of the task's {len(every)} finished runs"
        mine = (_seconds(r.get("wall_s")) for r in self.recorded if r.get("task") == self.task)
        kept = [k for k in mine if k is not None]  # a row without a usable time is not one
        if kept:
            where = f"mean of the task's {len(kept)} comparison runs in runs.csv"
            return statistics.fmean(kept), where
        return None, ""

    def _on_disk(self, which: Sequence[str]) -> list[float]:
        out = []
        for phase in which:
            for summary in sorted(self.proto.phase_dir(self.task, phase).glob("**/summary.json")):
                seconds = _seconds(json.loads(summary.read_text()).get("wall_s"))
                out += [] if seconds is None else [seconds]
        return out


def _seconds(value: object) -> float | None:
    """Return ``value`` as a finite, non-negative number of seconds (None: it is not one)."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _variant_means(runs: Runs) -> dict[str, float]:
    """Return each variant's mean wall seconds over its finished runs among decided ``runs``."""
    walls: dict[str, list[float]] = {}
    for variant, job in runs:
        seconds = _seconds(job.summary().get("wall_s")) if job.done() else None
        if seconds is not None:
            walls.setdefault(variant.label, []).append(seconds)
    return {label: statistics.fmean(w) for label, w in walls.items()}


def _timed_by(by_own: int, rest: int, fallback: float | None, basis: str) -> str:
    """Say how the left runs are timed: ``by_own`` by their variant's, ``rest`` by ``fallback``."""
    parts = [f"{by_own} at their variant's mean here"] if by_own else []
    if rest:
        at = f"at {fallback:.0f} s, the {basis}" if fallback is not None else "untimed"
        parts.append(f"{rest} {at}")
    return "; ".join(parts) if parts else "nothing left"


def render(pieces: Sequence[Piece], workers: int) -> list[str]:
    """Return one line per piece and a total line (the hours of the pieces that can be timed)."""
    lines = []
    for p in pieces:
        hours = p.hours(workers)
        time = (
            f"≈ {hours:.2f} h on {workers} worker(s) ({p.timed_by})"
            if hours is not None
            else "no finished run of this task to time it by"
        )
        note = f"; {p.open_end}" if p.open_end else ""
        lines.append(
            f"{p.task} {p.phase}: {p.runs} runs, {p.decided} decided, {p.left} to run, {time}{note}"
        )
    timed = [p for p in pieces if p.left_seconds is not None]
    hours = sum(p.hours(workers) or 0.0 for p in timed)
    untimed = sum(p.left for p in pieces if p.left_seconds is None)
    total = f"left: {sum(p.left for p in pieces)} runs"
    if timed:
        total += f", ≈ {hours:.2f} h of wall time on {workers} worker(s)"
    if untimed:
        total += f"; {untimed} of them with no finished run to time them by"
    lines.append(total)
    return lines
