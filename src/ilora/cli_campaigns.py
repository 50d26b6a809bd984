"""``ilora bench dp``, ``faults``, ``lr``, ``flower``, ``flower-parity`` (registered in ``cli``).

The run campaigns (dp, faults, lr) share ``--config``, ``--set``, ``--quick``, ``--out``,
``--runs`` and ``--workers``, declared once (:func:`campaign`); a finished (or engine-stopped)
run of the same config in ``--runs`` is reused, so an interrupted campaign resumes. Each writes
tidy CSVs and ``meta.json`` under ``--out`` (default ``results/<name>``; ``--quick``:
``runs/quick/<name>``) and prints the files it wrote.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Annotated
from typing import Any

import typer

from ilora.cli_common import USER_ERRORS
from ilora.cli_common import console
from ilora.cli_common import fail
from ilora.cli_common import split_floats
from ilora.cli_common import split_ints
from ilora.cli_common import split_names
from ilora.cli_options import AlgorithmsOpt
from ilora.cli_options import BenchOutOpt
from ilora.cli_options import SeedsOpt
from ilora.cli_options import SetOpt
from ilora.cli_options import WorkersOpt

if TYPE_CHECKING:
    from ilora.bench.campaign import Campaign

    Measure = Callable[[Campaign], list[Path]]  # a campaign's run, given where it works

RunsOpt = Annotated[Path | None, typer.Option(help="run directories")]


def _run(make: Callable[[], list[Path]]) -> None:
    """Run a measurement; a user error (bad option, config, name) is one line and exit 2."""
    try:
        written = make()
    except USER_ERRORS as err:
        fail(err)
    console.print(f"written: {', '.join(p.as_posix() for p in written)}")


def _shared(config: Path, quick_help: str) -> list[inspect.Parameter]:
    """Return the options every run campaign takes (``--config`` first, the others last)."""

    def option(name: str, default: object, annotation: object) -> inspect.Parameter:
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )

    return [
        option("config", config, Annotated[Path, typer.Option(help="the experiment")]),
        option("set_", None, SetOpt),
        option("quick", False, Annotated[bool, typer.Option(help=quick_help)]),
        option("out", None, BenchOutOpt),
        option("runs", None, RunsOpt),
        option("workers", 1, WorkersOpt),
    ]


def campaign(
    config: Path, quick_help: str
) -> Callable[[Callable[..., Measure]], Callable[..., None]]:
    """Return a decorator making a run campaign's command, with the shared options added.

    The decorated function takes the campaign's own options and returns its run as a function
    of the :class:`~ilora.bench.campaign.Campaign` (``--config`` defaulting to ``config``,
    ``--set``, ``--quick`` described by ``quick_help``, ``--out``, ``--runs``, ``--workers``).
    A user error (bad option, config, name) is one line and exit 2.
    """

    def make(command: Callable[..., Measure]) -> Callable[..., None]:
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command, eval_str=True).parameters.values()
        ]
        shared = _shared(config, quick_help)

        def run(**options: Any) -> None:
            from ilora.bench.campaign import Campaign

            mine = {p.name: options.pop(p.name) for p in shared}
            sets = tuple(mine.pop("set_") or [])
            _run(lambda: command(**options)(Campaign(sets=sets, **mine)))

        params = [shared[0], *own, *shared[1:]]
        run.__name__, run.__doc__ = command.__name__, command.__doc__
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return make


@campaign(Path("configs/demo.yaml"), "smoke config, 3 rounds")
def bench_dp(
    algorithms: AlgorithmsOpt = "ilora,ffa-lora",
    sigmas: Annotated[str, typer.Option(help="noise multipliers (0 = no DP)")] = "0,0.5,1,2",
    central: Annotated[
        str, typer.Option(help="algorithms that also run with dp.noise=aggregate")
    ] = "",
    clip: Annotated[str, typer.Option(help="dp.clip_norm, or auto (median norm)")] = "auto",
    calib_rounds: Annotated[int, typer.Option(help="rounds of the calibration runs")] = 3,
    delta: Annotated[float, typer.Option(help="dp.delta")] = 1e-5,
) -> Callable[..., list[Path]]:
    """Differential privacy: final accuracy against ε for several noise multipliers."""
    from ilora.bench import dp

    if clip != "auto":
        split_floats(clip, "--clip")  # a number or auto
    plan = partial(
        dp.Plan,
        algorithms=tuple(split_names(algorithms)),
        sigmas=tuple(split_floats(sigmas, "--sigmas")),
        central=tuple(split_names(central)),
        clip=clip,
        calib_rounds=calib_rounds,
        delta=delta,
    )
    return lambda where: dp.run(plan(where))


@campaign(Path("configs/demo.yaml"), "smoke config, 6 rounds, 10 clients, the first seed only")
def bench_faults(
    rounds: Annotated[int, typer.Option(help="fed.rounds")] = 20,
    algorithms: AlgorithmsOpt = "ilora",
    seeds: SeedsOpt = "0,1,2",
    clip: Annotated[float, typer.Option(help="fed.clip_update_norm")] = 4.0,
    max_norm: Annotated[float, typer.Option(help="fed.max_update_norm")] = 100.0,
    robust: Annotated[str, typer.Option(help="fed.robust where allowed")] = "trimmed_mean",
    trim: Annotated[float, typer.Option(help="fed.trim_fraction")] = 0.2,
    controls: Annotated[
        str, typer.Option(help="algorithms that also get the lost-updates control run")
    ] = "",
    screen: Annotated[
        float | None,
        typer.Option(help="also run the faults with the direction screen fed.min_cosine=VALUE"),
    ] = None,
    no_clean: Annotated[bool, typer.Option("--no-clean", help="skip the clean runs")] = False,
) -> Callable[..., list[Path]]:
    """Fault campaign: the same run clean and under a mix of client faults, side by side."""
    from ilora.bench import faults

    plan = partial(
        faults.Plan,
        rounds=rounds,
        algorithms=tuple(split_names(algorithms)),
        seeds=tuple(dict.fromkeys(split_ints(seeds, "--seeds"))),
        clip=clip,
        max_norm=max_norm,
        robust=robust,
        trim=trim,
        controls=tuple(split_names(controls)),
        screen=screen,
        no_clean=no_clean,
    )
    return lambda where: faults.run(plan(where))


@campaign(Path("configs/bench-quality/fashion-mnist.yaml"), "smoke config, 2 rounds, seed 0")
def bench_lr(
    algorithms: AlgorithmsOpt = "ilora,ilora-s,fedit,frlora",
    lrs: Annotated[
        str, typer.Option(help="comma-separated train.lr values")
    ] = "5e-3,2e-3,5e-4,2e-4,1e-4,5e-5",
    seeds: SeedsOpt = "0,1,2",
) -> Callable[..., list[Path]]:
    """Learning-rate sensitivity: the quality grid's one learning rate, and what others give."""
    from ilora.bench import lr

    plan = partial(
        lr.Plan,
        algorithms=tuple(split_names(algorithms)),
        lrs=tuple(split_floats(lrs, "--lrs")),
        seeds=tuple(split_ints(seeds, "--seeds")),
    )
    return lambda where: lr.run(plan(where))


def bench_flower(
    rounds: Annotated[int, typer.Option(help="rounds per run")] = 5,
    repeats: Annotated[int, typer.Option(help="runs per runtime")] = 3,
    timeout: Annotated[float, typer.Option(help="seconds per run")] = 1800.0,
    quick: Annotated[bool, typer.Option(help="2 rounds, 1 repeat")] = False,
    out: BenchOutOpt = None,
    runs: Annotated[Path, typer.Option(help="scratch run directories")] = Path("runs/bench-flower"),
    runtimes: Annotated[
        str,
        typer.Option(help="comma-separated: embedded,simulation,deployment,deployment-per-message"),
    ] = "embedded,simulation,deployment,deployment-per-message",
) -> None:
    """One small workload on the three Flower runtimes: time per round and peak memory."""
    from ilora.bench.flower import runtimes as bench

    def make() -> list[Path]:
        plan = bench.Plan(rounds, repeats, timeout, quick, out, runs, tuple(split_names(runtimes)))
        bench.check_plan(plan)
        return bench.run(plan)

    _run(make)


def bench_flower_parity(
    out: Annotated[Path, typer.Option(help="results directory")] = Path("results/flower/parity"),
) -> None:
    """Every registered algorithm on the embedded engine and on Flower, compared bitwise."""
    from ilora.bench.flower import parity

    _run(lambda: parity.run(out))
