"""``ilora bench`` measurements: aggregation, engine, throughput, precision, scaling, exactness.

Each writes tidy CSVs and ``meta.json`` under ``--out`` (default ``results/<name>``; with
``--quick`` ``runs/quick/<name>``, so a smoke run never overwrites committed results) and prints
the section ``ilora report`` would render from them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Annotated
from typing import Any

import typer

from ilora.cli_common import USER_ERRORS
from ilora.cli_common import console
from ilora.cli_common import fail
from ilora.cli_common import split_ints
from ilora.cli_common import split_names
from ilora.cli_options import BenchOutOpt

QuickOpt = Annotated[bool, typer.Option(help="a smoke preset of about a minute")]
ThreadsOpt = Annotated[int, typer.Option(help="torch threads of the measuring processes")]


def _ints(text: str | None, option: str) -> tuple[int, ...] | None:
    """Parse ``"4,12,32"``; None stays None (the preset's value)."""
    return None if text is None else tuple(split_ints(text, option))


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(split_names(text))


def _given(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _show(name: str, out: Path) -> None:
    import importlib

    render = importlib.import_module(f"ilora.report.{name}").render
    with tempfile.TemporaryDirectory() as img:  # figures belong in docs/img: `ilora report`
        console.print(render(out, Path(img)))
    console.print(f"written: {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")


RunsOpt = Annotated[Path | None, typer.Option(help="the runs to collect (default runs/<name>)")]
ResultsOpt = Annotated[Path | None, typer.Option(help="results directory (default results/<name>)")]


def _collect(name: str, runs: Path | None, out: Path | None) -> None:
    """Export the finished runs under ``runs`` with ``ilora.bench.<name>.export``; show them."""
    import importlib

    runs, out = runs or Path("runs", name), out or Path("results", name)
    try:
        importlib.import_module(f"ilora.bench.{name}").export(runs, out)
    except USER_ERRORS as err:
        fail(err)
        return
    _show(name, out)


def _measure(
    bench: ModuleType,
    quick: bool,
    out: Path | None,
    threads: int,
    options: Callable[[], dict[str, Any]],
) -> None:
    """Run ``bench`` (``ilora.bench.<name>``) and print the section its results render to.

    The plan is the module's preset (``QUICK``, or ``Plan()``) with ``threads`` and the options
    given; ``options()`` parses them here, so a malformed value is a user error (exit 2) too.
    """
    from ilora.bench.resultfiles import results_dir

    name = bench.__name__.rsplit(".", 1)[-1]
    try:
        plan = replace(bench.QUICK if quick else bench.Plan(), threads=threads, **options())
        bench.check_plan(plan)
        out = results_dir(name, quick, out)
        bench.run(plan, out, quick, log=console.print)
    except USER_ERRORS as err:
        fail(err)
    _show(name, out)


def bench_aggregation(
    quick: QuickOpt = False,
    out: BenchOutOpt = None,
    dims: Annotated[str | None, typer.Option(help="layer sizes d: 768,1024,2048,4096")] = None,
    clients: Annotated[str | None, typer.Option(help="client counts: 4,12,32")] = None,
    clients_dim: Annotated[int | None, typer.Option(help="layer size of the clients sweep")] = None,
    methods: Annotated[
        str | None,
        typer.Option(help="comma-separated (default: every method + ILoRA's dense forms)"),
    ] = None,
    repeats: Annotated[int | None, typer.Option(help="timed calls per method and setting")] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Server aggregation time and peak memory per method vs layer size and clients."""
    from ilora.bench import aggregation

    def options() -> dict[str, Any]:
        return _given(
            dims=_ints(dims, "--dims"),
            clients=_ints(clients, "--clients"),
            clients_dim=clients_dim,
            methods=_names(methods),
            repeats=repeats,
        )

    _measure(aggregation, quick, out, threads, options)


def bench_engine(
    quick: QuickOpt = False,
    out: BenchOutOpt = None,
    config: Annotated[
        str | None, typer.Option(help="overhead: the experiment (default configs/demo.yaml)")
    ] = None,
    algorithms: Annotated[str | None, typer.Option(help="overhead: fedit,ilora")] = None,
    rounds: Annotated[int | None, typer.Option(help="overhead: timed rounds per run")] = None,
    repeats: Annotated[int | None, typer.Option(help="overhead: runs per algorithm")] = None,
    memory_config: Annotated[
        str | None, typer.Option(help="memory: the experiment (default configs/demo.yaml)")
    ] = None,
    memory_set: Annotated[
        list[str] | None,
        typer.Option(help="memory: overrides replacing the preset's (full 6-layer MiniLM)"),
    ] = None,
    clients: Annotated[str | None, typer.Option(help="memory: client counts 10,100,1000")] = None,
    sampled: Annotated[int | None, typer.Option(help="memory: clients per round")] = None,
    parts: Annotated[
        str | None, typer.Option(help="what to measure: overhead,memory,scale (default all)")
    ] = None,
    scale_clients: Annotated[
        str | None, typer.Option(help="scale: registered clients 1000,10000,100000")
    ] = None,
    scale_sampled: Annotated[int | None, typer.Option(help="scale: clients per round")] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Engine overhead over bare local training; peak memory and round time vs clients."""
    from ilora.bench import engine

    def options() -> dict[str, Any]:
        return _given(
            config=config,
            overrides=() if config is not None else None,  # the preset's are for its config
            algorithms=_names(algorithms),
            rounds=rounds,
            repeats=repeats,
            memory_config=memory_config,
            memory_overrides=tuple(memory_set) if memory_set is not None else None,
            clients=_ints(clients, "--clients"),
            sampled=sampled,
            parts=_names(parts),
            scale_clients=_ints(scale_clients, "--scale-clients"),
            scale_sampled=scale_sampled,
        )

    _measure(engine, quick, out, threads, options)


def bench_throughput(
    quick: QuickOpt = False,
    out: BenchOutOpt = None,
    workloads: Annotated[
        str | None, typer.Option(help="minilm,mobilenetv2 (quick: tiny-text)")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="timed steps per repeat and precision")] = None,
    warmup: Annotated[int | None, typer.Option(help="untimed steps before timing")] = None,
    repeats: Annotated[int | None, typer.Option(help="repeats (medians over them)")] = None,
    matmul_size: Annotated[int | None, typer.Option(help="n of the n x n matmul peak")] = None,
    threads: ThreadsOpt = 1,
    compare: Annotated[
        bool,
        typer.Option(help="also time bf16 as plain autocast runs it (no cast cache), side by side"),
    ] = False,
) -> None:
    """Client training steps/s and GFLOP/s in fp32 and bf16 against the matmul peak."""
    from ilora.bench import throughput

    def options() -> dict[str, Any]:
        return _given(
            workloads=_names(workloads),
            steps=steps,
            warmup=warmup,
            repeats=repeats,
            matmul_size=matmul_size,
            compare=compare or None,
        )

    _measure(throughput, quick, out, threads, options)


def bench_precision(runs: RunsOpt = None, out: ResultsOpt = None) -> None:
    """Collect the fp32 and bf16 demo runs (paired by seed) into runs.csv and meta.json.

    The runs: ``fp32/`` and ``bf16/``, ``ilora compare`` outputs of the demo.
    """
    _collect("precision", runs, out)


def bench_scaling(runs: RunsOpt = None, out: ResultsOpt = None) -> None:
    """Collect the mixed-rank scaling-convention runs (on validation) into runs.csv, meta.json.

    The runs: one ``ilora compare`` output of the demo per convention.
    """
    _collect("scaling", runs, out)


def bench_exactness(runs: RunsOpt = None, out: ResultsOpt = None) -> None:
    """Collect ILoRA's and ILoRA-S's demo runs before/after the exactness fix (issue 14).

    The runs: ``<mixed|equal>-<before|after>/``, ``ilora compare`` outputs of the demo.
    """
    _collect("exactness", runs, out)


def bench_startup(
    quick: QuickOpt = False,
    out: BenchOutOpt = None,
    before: Annotated[
        str | None, typer.Option(help="also time this git revision's src/, interleaved")
    ] = None,
    repeats: Annotated[int | None, typer.Option(help="runs per command and tree")] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Start-up time of --help, list and validate (fresh processes), and what they import."""
    from ilora.bench import startup

    _measure(startup, quick, out, threads, lambda: _given(before=before, repeats=repeats))
