"""What the run campaigns (``ilora bench dp``, ``faults``, ``lr``) share: where they work, and runs.

A campaign is a list of :class:`~ilora.bench.jobs.Job` (a preset plus overrides and its run
directory), run through the pool every measurement uses (:mod:`ilora.bench.jobs`):
:func:`outcomes` runs those without a finished or stopped run of the identical config on
``workers`` one-thread processes, then reads every run back in the order of the list, so the
result files do not depend on which run finished first. A run the engine stopped is a result:
its summary says where it stopped (``ilora.bench.runner.stopped_summary``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ilora.bench.jobs import Job
from ilora.bench.jobs import pending
from ilora.bench.jobs import plan_line
from ilora.bench.jobs import run_jobs
from ilora.bench.resultfiles import results_dir
from ilora.bench.runner import Record

SMOKE = Path("configs/smoke.yaml")


@dataclass(frozen=True)
class Campaign:
    """The options every campaign shares: where it reads and writes, overrides, processes.

    ``quick`` uses the smoke config and writes under ``runs/quick/``; otherwise ``config``,
    ``results/<name>`` and ``runs/<name>``, unless ``out``/``runs`` say otherwise. ``workers``
    runs that many runs at once (one torch thread each).
    """

    config: Path
    quick: bool = False
    sets: tuple[str, ...] = ()
    out: Path | None = None
    runs: Path | None = None
    workers: int = 1

    def locations(self, name: str) -> tuple[Path, Path, Path]:
        """Return ``(config, results directory, runs directory)`` of campaign ``name``."""
        path = SMOKE if self.quick else self.config
        out = results_dir(name, self.quick, self.out)
        runs = self.runs or Path(f"runs/quick/{name}-runs" if self.quick else f"runs/{name}")
        return path, out, runs


def outcomes(jobs: Sequence[Job], workers: int) -> list[tuple[Record, list[Record]]]:
    """Run (or reuse) every job; return ``(summary, history records)`` of each, in order.

    Every config to run is validated first, so a bad one is refused before any run starts.
    """
    from ilora.engine.setup import validate

    todo = pending(jobs)
    for job in todo:
        validate(job.config())
    print(f"{len(jobs)} runs: {plan_line(jobs, todo, rerun_hint=False)}", flush=True)
    run_jobs(todo, workers, lambda line: print(line, flush=True))
    return [job.outcome() for job in jobs]
