"""Run many experiments into run directories, resumably, on worker processes of one thread each.

A :class:`Job` is a preset config plus ``--set`` overrides and the directory it runs into. A
job whose directory holds a finished run of the identical config is skipped (``pending``), so an
interrupted campaign continues where it stopped; a run that raises (the engine stopped it, e.g.
non-finite updates at too high a learning rate) is recorded in ``failed.json`` with its config
and reason and counts as decided (its score is NaN) until ``rerun``. ``ilora bench protocol``
and ``ilora bench quality`` run through here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.bench.runner import finished
from ilora.bench.runner import run_to_dir

FAILED = "failed.json"  # beside a run that raised: its config and the reason


@dataclass(frozen=True)
class Job:
    """One run: ``preset`` with ``overrides``, written to ``run_dir``."""

    label: str
    preset: Path
    overrides: tuple[str, ...]
    run_dir: Path

    def config(self) -> config_mod.ExperimentConfig:
        return config_mod.load(self.preset, list(self.overrides))

    def done(self) -> bool:
        return finished(self.config(), self.run_dir)

    def failed(self) -> str:
        """Return why the last attempt at exactly this config raised ("" when it did not)."""
        path = self.run_dir / FAILED
        if not path.is_file():
            return ""
        record = json.loads(path.read_text())
        same = record.get("config") == config_mod.to_dict(self.config())
        return str(record.get("reason", "")) if same else ""

    def history(self) -> list[dict[str, Any]]:
        """Return the finished run's ``history.jsonl`` records (empty when not finished)."""
        if not self.done():
            return []
        lines = (self.run_dir / "history.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def summary(self) -> dict[str, Any]:
        """Return the finished run's ``summary.json`` (empty when not finished)."""
        return json.loads((self.run_dir / "summary.json").read_text()) if self.done() else {}


def pending(jobs: Sequence[Job], rerun: bool = False) -> list[Job]:
    """Return the jobs without a finished or failed run of the identical config.

    A run that raised (e.g. stopped by the engine after diverging) is deterministic, so it is
    not tried again unless ``rerun``.
    """
    return [j for j in jobs if rerun or not (j.done() or j.failed())]


def plan_line(jobs: Sequence[Job], todo: Sequence[Job]) -> str:
    """Return "F finished, [N failed before (...), ]T to run" for ``todo = pending(jobs)``."""
    left = set(todo)
    failed = sum(1 for j in jobs if j not in left and j.failed() and not j.done())
    before = f"{failed} failed before (--rerun runs them again), " if failed else ""
    return f"{len(jobs) - len(left) - failed} finished, {before}{len(left)} to run"


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
    (job.run_dir / FAILED).unlink(missing_ok=True)  # a run tried again is judged anew
    try:
        summary = run_to_dir(job.config(), job.run_dir)
    except Exception as err:  # noqa: BLE001  (one failed run must not stop the campaign)
        record = {"config": config_mod.to_dict(job.config()), "reason": str(err)}
        job.run_dir.mkdir(parents=True, exist_ok=True)
        (job.run_dir / FAILED).write_text(json.dumps(record, indent=1) + "\n")
        return job, f"FAILED after {time.perf_counter() - start:.1f} s: {err}"
    acc = 100 * float(summary["final_accuracy"])
    return job, f"accuracy {acc:.1f}% in {time.perf_counter() - start:.1f} s"


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    report: Callable[[str], None],
    on_done: Callable[[int], None] | None = None,
) -> None:
    """Run ``jobs`` on ``workers`` spawned processes (in this process for one worker).

    ``report`` receives one line per finished run; ``on_done(k)`` is called after the k-th.
    """
    if not jobs:
        return

    def done(k: int, job: Job, outcome: str) -> None:
        report(f"[{k}/{len(jobs)}] {job.label}: {outcome}")
        if on_done:
            on_done(k)

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
        for k, future in enumerate(as_completed(futures), 1):
            done(k, *future.result())
