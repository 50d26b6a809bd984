"""``ilora bench protocol``: the comparison protocol, in phases (``ilora.bench.protocol``).

``--phase tune`` chooses every variant's learning rate on validation; ``--phase compare`` finds
the horizon (validation) and runs the comparison on test at those choices; ``all`` does both;
``plan`` counts the runs left and estimates their hours (``bench.protocol_plan``).
Every phase resumes (finished runs are reused) and writes every result file the finished runs
support to ``results/protocol/`` (``--quick``: a tiny-text smoke version under
``runs/quick/protocol/``). Rates and horizon come from the tuning setting (``--tune-ranks``,
``--tune-alpha``; default heterogeneous, 0.1), whatever ``--ranks`` and ``--alphas`` compare.
"""

from __future__ import annotations

import time
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
from ilora.cli_options import AlphasOpt
from ilora.cli_options import GridSeedsOpt
from ilora.cli_options import RankSettingsOpt
from ilora.cli_options import SetOpt
from ilora.cli_options import TasksOpt
from ilora.cli_options import WorkersOpt

if TYPE_CHECKING:
    from ilora.bench.protocol import Protocol

FAMILY_ONE = "fedit,ffa-lora,flora,flexlora,lora-fair,hetlora,fedex-lora,fedsa-lora,ilora,ilora-s"
QUICK_VARIANTS = "fedit,ilora"

Quick = Annotated[bool, typer.Option(help="tiny-text, 2 variants, 2 seeds, few rounds: a minute")]
Variants = Annotated[
    str | None,
    typer.Option(help="comma-separated name or name+key=value (centralized always runs)"),
]
TuneRanks = Annotated[
    str | None,
    typer.Option(help="rank setting of the tuning and horizon runs (default heterogeneous)"),
]
TuneAlpha = Annotated[
    float | None, typer.Option(help="Dirichlet alpha of the tuning and horizon runs (default 0.1)")
]
Preset = Annotated[Path | None, typer.Option(help="directory of <task>.yaml presets")]
Out = Annotated[Path | None, typer.Option(help="results directory (default results/protocol)")]


def _protocol(
    quick: bool,
    variants: str | None,
    tasks: str,
    ranks: str | None,
    alphas: str | None,
    seeds: str | None,
    preset: Path | None,
    set_: list[str] | None,
    tuning: dict[str, Any],
    out: Path | None = None,
) -> Protocol:
    from ilora.bench.protocol import Protocol
    from ilora.bench.protocol import parse_variants

    root = Path("runs/quick/protocol" if quick else "runs/protocol")
    return Protocol(
        tasks=tuple(split_names("tiny-text" if quick else tasks)),
        variants=parse_variants(variants or (QUICK_VARIANTS if quick else FAMILY_ONE)),
        preset_dir=preset or Path("configs/protocol-quick" if quick else "configs/protocol"),
        runs=root / "runs",
        tuned_dir=root / "tuned" if quick else Path("configs/tuned"),
        ranks=tuple(split_names(ranks or "heterogeneous,homogeneous")),
        alphas=tuple(split_floats(alphas or "0.1,0.5", "--alphas")),
        seeds=tuple(split_ints(seeds or ("0,1" if quick else "0,1,2,3,4"), "--seeds")),
        n_rates=4 if quick else 6,
        low_rate=1e-3 if quick else 10**-4.5,
        max_rounds=12 if quick else 60,
        extra=tuple(set_ or []),
        records=_out(out, quick) / "records",
        **{k: v for k, v in tuning.items() if v is not None},  # else Protocol's defaults
    )


def _out(out: Path | None, quick: bool) -> Path:
    return out or Path("runs/quick/protocol/results" if quick else "results/protocol")


Phase = Annotated[
    str,
    typer.Option(
        help="tune (rates, on validation), compare (horizon, then test runs), all; report: "
        "write the result files of the finished runs and run nothing (after a stop); plan: "
        "count the runs left and estimate their hours, run and write nothing"
    ),
]


def bench_protocol(
    phase: Phase = "all",
    quick: Quick = False,
    variants: Variants = None,
    tasks: TasksOpt = "healthnews,fashion-mnist",
    ranks: RankSettingsOpt = None,
    alphas: AlphasOpt = None,
    seeds: GridSeedsOpt = None,
    workers: WorkersOpt = 2,
    preset: Preset = None,
    out: Out = None,
    set_: SetOpt = None,
    tune_ranks: TuneRanks = None,
    tune_alpha: TuneAlpha = None,
) -> None:
    """Tune every method on validation, then compare them over seeds on test (resumable)."""
    from ilora.bench import protocol_results

    if phase not in ("tune", "compare", "all", "report", "plan"):
        fail(ValueError(f"--phase must be tune, compare, all, report or plan, got {phase!r}"))
    start = time.perf_counter()
    try:
        tuning = {"tune_ranks": tune_ranks, "tune_alpha": tune_alpha}
        proto = _protocol(quick, variants, tasks, ranks, alphas, seeds, preset, set_, tuning, out)
        protocol_results.check_tuning(_out(out, quick), proto)
        _restore(proto)
        if phase == "plan":
            _plan(proto, workers, _out(out, quick) / "runs.csv")
            return
        tuned = {t: _tuned(proto, t) for t in proto.tasks} if phase == "compare" else {}
        if phase != "report":  # after the checks: a refused invocation is not on record
            protocol_results.record_command(_out(out, quick), phase)
        for task in proto.tasks if phase != "report" else ():
            rates = _tune(proto, task, workers) if phase != "compare" else tuned[task]
            if phase != "tune":
                _compare(proto, task, rates, workers)
    except USER_ERRORS as err:
        fail(err)
        return
    wall = time.perf_counter() - start if phase != "report" else 0.0
    n = protocol_results.write(_out(out, quick), proto, quick, phase, wall)
    console.print(f"written: {_out(out, quick)} ({n} comparison runs), {proto.tuned_dir}/")


def _restore(proto: Protocol) -> None:
    """Bring back the kept runs a fresh clone or a deleted ``runs/`` lacks (``runrecords``)."""
    from ilora.bench import runrecords

    assert proto.records is not None  # set by _protocol
    n, refused = runrecords.restore(proto.records, proto.runs)
    if n:
        console.print(f"restored {n} decided runs from {proto.records} into {proto.runs}")
    for record in refused:
        console.print(f"refused the record {record}: it holds a symbolic link; remove it")


def _plan(proto: Protocol, workers: int, runs_csv: Path) -> None:
    from ilora.bench import protocol_plan
    from ilora.bench import resultfiles

    kept = resultfiles.read_rows(runs_csv) if runs_csv.is_file() else []
    pieces = [p for task in proto.tasks for p in protocol_plan.plan(proto, task, kept)]
    for line in protocol_plan.render(pieces, workers):
        console.print(line, highlight=False)


def _tune(proto: Protocol, task: str, workers: int) -> dict[str, float]:
    from ilora.bench import phases

    results = phases.tune(proto, task, workers, console.print)
    for t in results:
        edge = " (still at the grid's edge)" if t.at_edge else ""
        console.print(f"{task} {t.variant.label}: lr {t.rate:g}{edge}")
    return {t.variant.label: t.rate for t in results}


def _tuned(proto: Protocol, task: str) -> dict[str, float]:
    from ilora.bench import phases

    return phases.tuned_rates(proto, task)


def _compare(proto: Protocol, task: str, rates: dict[str, float], workers: int) -> None:
    from ilora.bench import phases

    found = phases.horizon(proto, task, rates, workers, console.print)
    console.print(f"{task}: horizon {found.rounds} rounds (plateau rounds {found.plateaus})")
    phases.compare(proto, task, rates, found.rounds, workers, console.print)
