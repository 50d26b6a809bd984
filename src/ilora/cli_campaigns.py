"""``ilora bench dp``, ``faults``, ``lr``, ``flower``, ``flower-parity`` (registered in ``cli``).

The run campaigns (dp, faults, lr) share ``--config``, ``--set``, ``--quick``, ``--out`` and
``--runs``; a finished run of the same config in ``--runs`` is reused, so an interrupted
campaign resumes. Each writes tidy CSVs and ``meta.json`` under ``--out`` (default
``results/<name>``; ``--quick``: ``runs/quick/<name>``) and prints the files it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
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

if TYPE_CHECKING:
    from ilora.bench.campaign import Campaign

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="extra key=value overrides (repeatable)")
]
OutOpt = Annotated[Path | None, typer.Option(help="results directory")]
RunsOpt = Annotated[Path | None, typer.Option(help="run directories")]
AlgOpt = Annotated[str, typer.Option(help="comma-separated names")]
SeedsOpt = Annotated[str, typer.Option(help="comma-separated seeds")]


def _where(
    config: Path, quick: bool, set_: list[str] | None, out: Path | None, runs: Path | None
) -> Campaign:
    from ilora.bench.campaign import Campaign

    return Campaign(config, quick, tuple(set_ or []), out, runs)


def _run(make: Callable[[], list[Path]]) -> None:
    """Run a measurement; a user error (bad option, config, name) is one line and exit 2."""
    try:
        written = make()
    except USER_ERRORS as err:
        fail(err)
    console.print(f"written: {', '.join(p.as_posix() for p in written)}")


def bench_dp(
    config: Annotated[Path, typer.Option(help="the experiment")] = Path("configs/demo.yaml"),
    algorithms: AlgOpt = "ilora,ffa-lora",
    sigmas: Annotated[str, typer.Option(help="noise multipliers (0 = no DP)")] = "0,0.5,1,2",
    central: Annotated[
        str, typer.Option(help="algorithms that also run with dp.noise=aggregate")
    ] = "",
    clip: Annotated[str, typer.Option(help="dp.clip_norm, or auto (median norm)")] = "auto",
    calib_rounds: Annotated[int, typer.Option(help="rounds of the calibration runs")] = 3,
    delta: Annotated[float, typer.Option(help="dp.delta")] = 1e-5,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option(help="smoke config, 3 rounds")] = False,
    out: OutOpt = None,
    runs: RunsOpt = None,
) -> None:
    """Differential privacy: final accuracy against ε for several noise multipliers."""
    from ilora.bench import dp

    def make() -> list[Path]:
        if clip != "auto":
            split_floats(clip, "--clip")  # a number or auto
        plan = dp.Plan(
            _where(config, quick, set_, out, runs),
            tuple(split_names(algorithms)),
            tuple(split_floats(sigmas, "--sigmas")),
            tuple(split_names(central)),
            clip,
            calib_rounds,
            delta,
        )
        return dp.run(plan)

    _run(make)


def bench_faults(
    config: Annotated[Path, typer.Option(help="the experiment")] = Path("configs/demo.yaml"),
    rounds: Annotated[int, typer.Option(help="fed.rounds")] = 20,
    algorithms: AlgOpt = "ilora",
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
    set_: SetOpt = None,
    quick: Annotated[
        bool, typer.Option(help="smoke config, 6 rounds, 10 clients, the first seed only")
    ] = False,
    out: OutOpt = None,
    runs: RunsOpt = None,
) -> None:
    """Fault campaign: the same run clean and under a mix of client faults, side by side."""
    from ilora.bench import faults

    def make() -> list[Path]:
        plan = faults.Plan(
            _where(config, quick, set_, out, runs),
            rounds,
            tuple(split_names(algorithms)),
            tuple(dict.fromkeys(split_ints(seeds, "--seeds"))),
            clip,
            max_norm,
            robust,
            trim,
            tuple(split_names(controls)),
            screen,
            no_clean,
        )
        return faults.run(plan)

    _run(make)


def bench_lr(
    config: Annotated[Path, typer.Option(help="the experiment")] = Path(
        "configs/bench-quality/fashion-mnist.yaml"
    ),
    algorithms: AlgOpt = "ilora,ilora-s,fedit,frlora",
    lrs: Annotated[
        str, typer.Option(help="comma-separated train.lr values")
    ] = "5e-3,2e-3,5e-4,2e-4,1e-4,5e-5",
    seeds: SeedsOpt = "0,1,2",
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option(help="smoke config, 2 rounds, seed 0")] = False,
    out: OutOpt = None,
    runs: RunsOpt = None,
) -> None:
    """Learning-rate sensitivity: the quality grid's one learning rate, and what others give."""
    from ilora.bench import lr

    def make() -> list[Path]:
        plan = lr.Plan(
            _where(config, quick, set_, out, runs),
            tuple(split_names(algorithms)),
            tuple(split_floats(lrs, "--lrs")),
            tuple(split_ints(seeds, "--seeds")),
        )
        return lr.run(plan)

    _run(make)


def bench_flower(
    rounds: Annotated[int, typer.Option(help="rounds per run")] = 5,
    repeats: Annotated[int, typer.Option(help="runs per runtime")] = 3,
    timeout: Annotated[float, typer.Option(help="seconds per run")] = 1800.0,
    quick: Annotated[bool, typer.Option(help="2 rounds, 1 repeat")] = False,
    out: OutOpt = None,
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
