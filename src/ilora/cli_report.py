"""``ilora report``, ``ilora export-results``, ``ilora bench quality`` (registered in ``cli``).

``report`` imports no training code; ``export-results`` and ``bench quality`` read or make run
directories and write result files under ``results/<name>/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Annotated

import typer

from ilora.cli_common import USER_ERRORS
from ilora.cli_common import console
from ilora.cli_common import fail
from ilora.cli_common import split_floats
from ilora.cli_common import split_ints
from ilora.cli_common import split_names
from ilora.cli_options import AlphasOpt
from ilora.cli_options import BenchOutOpt
from ilora.cli_options import GridSeedsOpt
from ilora.cli_options import RankSettingsOpt
from ilora.cli_options import SetOpt
from ilora.cli_options import TasksOpt
from ilora.cli_options import WorkersOpt

if TYPE_CHECKING:
    from ilora.bench.jobs import Job
    from ilora.bench.quality import Cell
    from ilora.bench.quality import Grid


def report(
    results: Annotated[Path, typer.Argument(help="results directory (one subdirectory each)")],
    doc: Annotated[Path, typer.Option(help="markdown file to write")] = Path("docs/RESULTS.md"),
    img: Annotated[Path, typer.Option(help="directory for the PNG figures")] = Path("docs/img"),
) -> None:
    """Regenerate docs/RESULTS.md (tables and PNG plots) from result files only."""
    from ilora import report as report_mod

    try:
        done = report_mod.build(results, doc, img)
    except USER_ERRORS as err:
        fail(err)
    console.print(f"written: {doc} ({', '.join(done) or 'no sections'}), figures in {img}")


def export(
    runs: Annotated[Path, typer.Argument(help="an `ilora compare` output directory")],
    dest: Annotated[Path, typer.Argument(help="results directory to write, e.g. results/demo")],
    source: Annotated[
        list[str] | None,
        typer.Option(help="the command that made the runs (repeat for several)"),
    ] = None,
    note: Annotated[
        list[str] | None, typer.Option(help="a provenance note to print with the results")
    ] = None,
) -> None:
    """Export the finished runs of a compare directory into runs.csv, rounds.csv and meta.json."""
    from ilora.bench import export as export_mod

    try:
        n = export_mod.export_compare(runs, dest, list(source or []), list(note or []))
    except USER_ERRORS as err:
        fail(err)
    console.print(f"written: {dest}/runs.csv, rounds.csv, meta.json ({n} runs)")


QUICK = {"algorithms": "fedit,ilora-s", "ranks": "heterogeneous", "alphas": "0.3", "seeds": "0"}
FULL = {"algorithms": "all", "ranks": "heterogeneous,homogeneous", "alphas": "0.1,0.3,1.0"}


def bench_quality(
    quick: Annotated[
        bool, typer.Option(help="fedit and ilora-s, one setting, one seed, 2 rounds: a minute")
    ] = False,
    out: BenchOutOpt = None,
    algorithms: Annotated[
        str | None, typer.Option(help="comma-separated names, or all (centralized always runs)")
    ] = None,
    tasks: TasksOpt = "healthnews,fashion-mnist",
    ranks: RankSettingsOpt = None,
    alphas: AlphasOpt = None,
    seeds: GridSeedsOpt = None,
    workers: WorkersOpt = 2,
    preset: Annotated[Path, typer.Option(help="directory of <task>.yaml presets")] = Path(
        "configs/bench-quality"
    ),
    runs_dir: Annotated[
        Path | None,
        typer.Option(help="run directories (default runs/quality; quick: runs/quick/quality/runs)"),
    ] = None,
    set_: SetOpt = None,
    rerun: Annotated[bool, typer.Option(help="run finished or stopped runs again")] = False,
    collect_only: Annotated[
        bool, typer.Option(help="write the result files from finished runs; run nothing")
    ] = False,
) -> None:
    """Run the quality grid: methods x rank settings x Dirichlet alphas x seeds, per task.

    A run whose directory already holds a finished run of the identical config is skipped, and
    so is one the engine stopped before (recorded in its stopped.json) unless --rerun.
    """
    from ilora.bench import jobs
    from ilora.bench.resultfiles import results_dir

    try:
        grid = _make_grid(quick, algorithms, tasks, ranks, alphas, seeds, preset, runs_dir, set_)
        out = results_dir("quality", quick, out)
        cells = grid.cells()
        _validate(grid, cells)
        runs = [grid.job(c) for c in cells]
        todo = [] if collect_only else jobs.pending(runs, rerun)
    except USER_ERRORS as err:
        fail(err)
    if not collect_only:
        console.print(f"{len(cells)} runs in the grid: {jobs.plan_line(runs, todo)}")
    _run_and_save(grid, cells, todo, out, quick, workers, collect_only)
    console.print(f"written: {out}/runs.csv, rounds.csv, meta.json")


def _run_and_save(
    grid: Grid,
    cells: list[Cell],
    todo: list[Job],
    out: Path,
    quick: bool,
    workers: int,
    collect_only: bool,
) -> None:
    """Run ``todo``; write the result files every 10 runs and at the end (a stopped grid too)."""
    from ilora.bench import jobs
    from ilora.bench import quality

    start = time.perf_counter()

    def save(k: int, _job: jobs.Job | None = None) -> None:
        if k % 10 == 0 or k == len(todo):
            extra = _kept_meta(out) if collect_only else {}
            wall = time.perf_counter() - start
            run = {"invocation_wall_s": wall, "runs_run": k, "workers": workers}
            run["load_average"] = os.getloadavg()[0]
            quality.write_results(grid, cells, out, quick, **{**run, **extra})  # extra wins

    jobs.run_jobs(todo, workers, console.print, save)
    save(len(todo))


def _make_grid(
    quick: bool,
    algorithms: str | None,
    tasks: str,
    ranks: str | None,
    alphas: str | None,
    seeds: str | None,
    preset: Path,
    runs_dir: Path | None,
    set_: list[str] | None,
) -> Grid:
    """Return the grid the options name (the quick preset's axes where an option is not given)."""
    from ilora.bench.quality import Grid

    axes = {**FULL, "seeds": "0,1,2", **(QUICK if quick else {})}
    alg_text = algorithms or axes["algorithms"]
    if alg_text == "all":
        import ilora.algorithms  # noqa: F401
        from ilora.algorithms.base import ALGORITHMS

        alg_text = ",".join(ALGORITHMS.names())
    return Grid(
        tasks=tuple(split_names(tasks)),
        algorithms=tuple(split_names(alg_text)),
        ranks=tuple(split_names(ranks or axes["ranks"])),
        alphas=tuple(split_floats(alphas or axes["alphas"], "--alphas")),
        seeds=tuple(split_ints(seeds or axes["seeds"], "--seeds")),
        preset=preset,
        runs=runs_dir or Path("runs/quick/quality/runs" if quick else "runs/quality"),
        extra=(*(["fed.rounds=2"] if quick else []), *(set_ or [])),
    )


def _kept_meta(out: Path) -> dict[str, object]:
    """Return what ``--collect-only`` keeps of the grid's meta.json: who ran it, how long."""
    from ilora.bench.resultfiles import command_line
    from ilora.report._table import read_meta

    old = read_meta(out)
    keys = ("command", "invocation_wall_s", "runs_run", "workers", "load_average")
    return {**{k: old[k] for k in keys if k in old}, "collected_with": command_line()}


def _validate(grid: Grid, cells: list[Cell]) -> None:
    """Check every run's config and names before the first run starts (once per task/method)."""
    from ilora.engine.setup import validate

    for key in {(c.task, c.algorithm): c for c in cells}.values():
        validate(grid.config(key))
