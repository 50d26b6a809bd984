"""Run many experiments into run directories, resumably, on worker processes of one thread each.

A :class:`Job` is a preset config plus ``--set`` overrides and the directory it runs into,
through the one run path :func:`ilora.bench.runner.run_to_dir`. A job whose directory holds a
finished run of the identical config, or one the engine stopped (``stopped.json``: e.g. every
client's update non-finite at too high a learning rate), is decided and skipped (``pending``),
so an interrupted campaign continues where it stopped; a stopped run is not tried again unless
``rerun``. Every run makes one torch thread; parallelism is ``workers`` processes. ``ilora
bench protocol``, ``quality``, ``dp``, ``faults`` and ``lr`` run through here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from ilora import config as config_mod
from ilora.bench import runner
from ilora.bench.runner import Record


@dataclass(frozen=True)
class Job:
    """One run: ``preset`` with ``overrides``, written to ``run_dir``.

    ``record_norms`` also writes the run's ``update_norms.csv`` (see ``runner.run_to_dir``).
    """

    label: str
    preset: Path
    overrides: tuple[str, ...]
    run_dir: Path
    record_norms: bool = False

    def config(self) -> config_mod.ExperimentConfig:
        return config_mod.load(self.preset, list(self.overrides))

    def done(self) -> bool:
        """Whether ``run_dir`` holds a run of exactly this config that ran to its end."""
        return runner.finished(self.config(), self.run_dir)

    def decided(self) -> bool:
        """Whether ``run_dir`` holds a run of exactly this config that finished or was stopped."""
        return runner.decided(self.config(), self.run_dir)

    def stopped(self) -> str:
        """Return why the engine stopped the run of exactly this config ("" when it did not)."""
        on_record = (self.run_dir / runner.STOPPED).is_file()
        if not on_record or (self.run_dir / runner.SUMMARY).is_file() or not self.decided():
            return ""  # the config is read only when a stop is on record
        return runner.stopped_reason(self.run_dir)

    def outcome(self) -> tuple[Record, list[Record]]:
        """Return ``(summary, history)`` of the decided run (a stopped one's summary says so)."""
        return runner.read_outcome(self.run_dir)

    def history(self) -> list[Record]:
        """Return the ``history.jsonl`` records of a run that ran to its end (else empty).

        A stopped run's score in the protocol is NaN, not that of the rounds before the stop.
        """
        return runner.read_history(self.run_dir) if self.done() else []

    def summary(self) -> Record:
        """Return the ``summary.json`` of a run that ran to its end (else empty)."""
        return self.outcome()[0] if self.done() else {}


def pending(jobs: Sequence[Job], rerun: bool = False) -> list[Job]:
    """Return the jobs without a finished or stopped run of the identical config.

    A stopped run (e.g. diverged) is deterministic, so it is not tried again unless ``rerun``.
    """
    return [j for j in jobs if rerun or not j.decided()]


def plan_line(jobs: Sequence[Job], todo: Sequence[Job], rerun_hint: bool = True) -> str:
    """Return "F finished, [S stopped before (...), ]T to run" for ``todo = pending(jobs)``.

    ``rerun_hint``: the command has ``--rerun`` (which runs the stopped ones again).
    """
    left = set(todo)
    stopped = sum(1 for j in jobs if j not in left and j.stopped())
    hint = " (--rerun runs them again)" if rerun_hint else ""
    before = f"{stopped} stopped before{hint}, " if stopped else ""
    return f"{len(jobs) - len(left) - stopped} finished, {before}{len(left)} to run"


def _init_worker(parent: int | None = None) -> None:
    """Prepare a worker: one torch thread; killed with ``parent`` (Linux) when that is given.

    A protocol stopped by a signal must not leave workers behind that finish their runs into
    the directories a restarted protocol writes too.
    """
    import torch

    from ilora.parentdeath import die_with_parent

    torch.set_num_threads(1)
    bind = die_with_parent(parent) if parent is not None else None
    if bind is not None:
        bind()


def _run(job: Job) -> tuple[Job, str]:
    """Run one job (in a worker); return it with a one-line outcome."""
    start = time.perf_counter()
    summary = runner.run_to_dir(job.config(), job.run_dir, job.record_norms)
    took = f"{time.perf_counter() - start:.1f} s"
    if summary.get("stopped"):  # the whole reason is in stopped.json
        return job, f"STOPPED after {took}: {summary['stopped'][:200]}"
    final = 100 * float(summary["final_accuracy"])  # the last evaluation, not a tuning score
    return job, f"final accuracy {final:.1f}% in {took}"


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    report: Callable[[str], None],
    on_done: Callable[[int, Job], None] | None = None,
) -> None:
    """Run ``jobs`` on ``workers`` spawned processes (in this process for one worker).

    ``report`` receives one line per finished or stopped run; ``on_done(k, job)`` is called
    after the k-th (the protocol keeps its record, ``runrecords.keep``). A run that raises
    (a bug, not a stop) ends the whole call: the runs not started yet are cancelled and the
    error propagates.
    """
    if not jobs:
        return

    def done(k: int, job: Job, outcome: str) -> None:
        report(f"[{k}/{len(jobs)}] {job.label}: {outcome}")
        if on_done:
            on_done(k, job)

    if workers <= 1:
        _init_worker()
        for k, job in enumerate(jobs, 1):
            done(k, *_run(job))
        return
    ctx = get_context("spawn")
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    )
    with pool:
        futures = [pool.submit(_run, job) for job in jobs]
        try:
            for k, future in enumerate(as_completed(futures), 1):
                done(k, *future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
