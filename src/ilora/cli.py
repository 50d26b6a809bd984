"""The ``ilora`` command line: each command parses, calls one library function and prints."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated
from typing import Any

import typer
from rich.table import Table

from ilora import cli_bench
from ilora import cli_campaigns
from ilora import cli_export
from ilora import cli_protocol
from ilora import cli_report
from ilora import config as config_mod
from ilora.cli_common import USER_ERRORS
from ilora.cli_common import console
from ilora.cli_common import fail
from ilora.cli_common import split_ints
from ilora.cli_common import split_names
from ilora.cli_flower import flower_app  # flwr only inside its commands
from ilora.cli_flower import stored_config  # flwr only inside its commands
from ilora.cli_options import AlgorithmsOpt
from ilora.cli_options import BenchOutOpt
from ilora.cli_options import CommAlgorithmsOpt
from ilora.cli_options import CommConfigArg
from ilora.cli_options import CommQuickOpt
from ilora.cli_options import CommRoundsOpt
from ilora.cli_options import CommRunsDirOpt
from ilora.cli_options import CommRunsOpt
from ilora.cli_options import CompareOutOpt
from ilora.cli_options import ConfigArg
from ilora.cli_options import OverwriteOpt
from ilora.cli_options import RerunOpt
from ilora.cli_options import ResumeOpt
from ilora.cli_options import RunConfigArg
from ilora.cli_options import RunOutOpt
from ilora.cli_options import SeedsOpt
from ilora.cli_options import SetOpt
from ilora.cli_runs import check_names
from ilora.cli_runs import finished_run
from ilora.cli_runs import fresh_out
from ilora.cli_runs import record_setting
from ilora.cli_runs import resume_point
from ilora.cli_runs import run_one
from ilora.config import ConfigError
from ilora.registry import Registry

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Federated LoRA fine-tuning.")
app.add_typer(flower_app, name="flower")


@app.callback()
def _quiet_loaders() -> None:
    """Federated LoRA fine-tuning (see `ilora COMMAND --help`)."""
    # ours are the bars to read: no Hugging Face download/loading bars (read at its import)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:  # already imported (an in-process caller)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


@app.command()
def run(
    config: RunConfigArg = None,
    set_: SetOpt = None,
    out: RunOutOpt = None,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run one federated experiment and write its run directory (or resume one).

    A directory that already holds a run is never replaced unless ``--overwrite`` is given;
    the default directory is new for every run.
    """
    try:
        if resume is not None:
            cfg, out = stored_config(
                resume, config is not None or bool(set_) or out is not None or overwrite
            )
            summary = run_one(cfg, out, resume_point(out))
        else:
            if config is None:
                raise ConfigError("give an experiment YAML (see configs/) or --resume RUN_DIR")
            cfg = config_mod.load(config, set_ or [])
            out = fresh_out(cfg, out, overwrite)
            summary = run_one(cfg, out)
    except USER_ERRORS as err:
        fail(err)
    _print_summary(cfg, summary, out)


SUMMARY_KEYS = (
    "final_accuracy",
    "best_accuracy",
    "mean_agg_error",
    "mean_download_error",
    "total_bytes_up",
    "total_bytes_down",
    "wall_s",
    "epsilon",  # only under DP noise
)


def _print_summary(cfg: config_mod.ExperimentConfig, summary: dict[str, object], out: Path) -> None:
    """Print a run's summary figures (those it has, of ``SUMMARY_KEYS``) and its directory."""
    table = Table(title=f"{cfg.algorithm} on {cfg.task}")
    for key in SUMMARY_KEYS:
        if key not in summary:
            continue
        value = summary[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"run directory: {out}")


@app.command()
def compare(
    config: ConfigArg,
    algorithms: AlgorithmsOpt,
    seeds: SeedsOpt = "0",
    set_: SetOpt = None,
    out: CompareOutOpt = Path("runs/compare"),
    rerun: RerunOpt = False,
) -> None:
    """Run the same setting for several algorithms and seeds; write comparison.md/.csv and plots.

    A run whose directory already holds a finished run of the identical config is skipped, so
    an interrupted comparison resumes where it stopped.
    """
    try:
        names = split_names(algorithms)
        seed_list = split_ints(seeds, "--seeds")
        cfgs = [
            config_mod.load(config, [*(set_ or []), f"algorithm={a}", f"seed={s}"])
            for a in names
            for s in seed_list
        ]
        for cfg in cfgs:  # reject every bad name before the first run starts
            check_names(cfg)
        record_setting(out, config, set_ or [])  # the setting's rate, for export-results
        for cfg in cfgs:
            run_dir = out / f"{cfg.algorithm}-seed{cfg.seed}"
            if not rerun and finished_run(cfg, run_dir):
                console.print(f"{cfg.algorithm} seed {cfg.seed}: finished run found, skipped")
                continue
            run_one(cfg, run_dir)
    except USER_ERRORS as err:
        fail(err)
    _write_comparison(out, names, seed_list, cfgs[0])


def _write_comparison(
    out: Path, names: list[str], seeds: list[int], cfg: config_mod.ExperimentConfig
) -> None:
    """Write comparison.md/.csv and the plots of the runs in ``out`` of ``names`` x ``seeds``."""
    from ilora.bench.export import data_facts
    from ilora.bench.rundirs import read_runs
    from ilora.bench.rundirs import to_csv
    from ilora.report._plot import accuracy_baselines
    from ilora.report._plot import metric_vs_round
    from ilora.report._table import comparison_markdown
    from ilora.report._table import comparison_rows

    runs = [r for r in read_runs(out) if r["algorithm"] in names and r["seed"] in seeds]
    rows = comparison_rows(runs)
    (out / "comparison.md").write_text(comparison_markdown(rows))
    (out / "comparison.csv").write_text(to_csv(rows))
    facts = data_facts(cfg)  # the data is cached from the runs (or read once)
    baselines = accuracy_baselines(facts["classes"], facts["majority_test"])
    metric_vs_round(
        runs, "accuracy", "Global test accuracy (seed mean)", "accuracy %", baselines
    ).savefig(out / "accuracy.png", dpi=120)
    metric_vs_round(
        runs, "agg_error", "Aggregation error ‖ΔW* − ΔW‖/‖ΔW*‖", "relative error"
    ).savefig(out / "agg_error.png", dpi=120)
    console.print(comparison_markdown(rows))
    console.print(f"written: {out / 'comparison.md'}, comparison.csv, accuracy.png, agg_error.png")


bench_app = typer.Typer(no_args_is_help=True, help="Measurements: communication, ...")
app.add_typer(bench_app, name="bench")
bench_app.command("quality")(cli_report.bench_quality)
bench_app.command("aggregation")(cli_bench.bench_aggregation)
bench_app.command("engine")(cli_bench.bench_engine)
bench_app.command("protocol")(cli_protocol.bench_protocol)
bench_app.command("throughput")(cli_bench.bench_throughput)
bench_app.command("precision")(cli_bench.bench_precision)
bench_app.command("scaling")(cli_bench.bench_scaling)
bench_app.command("exactness")(cli_bench.bench_exactness)
bench_app.command("startup")(cli_bench.bench_startup)
bench_app.command("dp")(cli_campaigns.bench_dp)
bench_app.command("faults")(cli_campaigns.bench_faults)
bench_app.command("lr")(cli_campaigns.bench_lr)
bench_app.command("flower")(cli_campaigns.bench_flower)
bench_app.command("flower-parity")(cli_campaigns.bench_flower_parity)
app.command("report")(cli_report.report)
app.command("export-results")(cli_report.export)
app.command("export")(cli_export.export_model)


@bench_app.command("comm")
def bench_comm(
    config: CommConfigArg = Path("configs/demo.yaml"),
    runs: CommRunsOpt = None,
    algorithms: CommAlgorithmsOpt = "all",
    rounds: CommRoundsOpt = 3,
    quick: CommQuickOpt = False,
    set_: SetOpt = None,
    out: BenchOutOpt = None,
    runs_dir: CommRunsDirOpt = None,
) -> None:
    """Bytes per round per method: the engine's counts against the analytic formulas."""
    from ilora.bench import commcheck
    from ilora.bench import resultfiles

    out = resultfiles.results_dir("comm", quick, out)
    run_root = runs_dir or Path("runs/quick/comm/runs" if quick else "runs/bench-comm")
    try:
        if runs is None:
            path = Path("configs/smoke.yaml") if quick else config
            _run_comm_methods(path, algorithms, rounds, quick, [*(set_ or [])], run_root)
        if runs is not None and not runs.is_dir():
            raise ConfigError(f"--runs {runs}: no such directory of finished runs")
        rows = commcheck.check_runs(runs or run_root)
        if not rows:
            raise ConfigError(f"no finished runs (summary.json) under {runs or run_root}")
    except USER_ERRORS as err:
        fail(err)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comm.md").write_text(commcheck.markdown(rows))
    (out / "comm.csv").write_text(commcheck.to_csv(rows))
    resultfiles.write_meta(out, quick, runs_dir=(runs or run_root).as_posix(), mb=commcheck.MB)
    console.print(commcheck.markdown(rows))
    console.print(f"written: {out}/comm.csv, comm.md, meta.json")


def _run_comm_methods(
    path: Path, algorithms: str, rounds: int, quick: bool, sets: list[str], run_root: Path
) -> None:
    """Run all methods, or the named ones, for ``rounds`` one-step rounds each in ``run_root``."""
    import ilora.algorithms  # noqa: F401
    from ilora.algorithms.base import ALGORITHMS

    names = ALGORITHMS.names() if algorithms == "all" else split_names(algorithms)
    extra = [f"fed.rounds={rounds}", "train.steps=1", "eval.final_full=false"]
    extra += ["data.local_test_fraction=0.25"] if quick else []
    for name in names:
        cfg = config_mod.load(path, [*extra, *sets, f"algorithm={name}"])
        check_names(cfg)
        run_one(cfg, run_root / name)


@app.command("list")
def list_(what: Annotated[str, typer.Argument(help="algorithms | tasks | partitioners")]) -> None:
    """Print the registered names of one kind, one per line."""
    registries = {  # the name tables only: no torch, and numpy for the partitioners alone
        "algorithms": "ilora.algorithms.catalog:ALGORITHMS",
        "tasks": "ilora.tasks:TASKS",
        "partitioners": "ilora.data.partitioners:PARTITIONERS",
    }
    if what not in registries:
        fail(ValueError(f"unknown kind {what!r}; choose one of {', '.join(registries)}"))
    module, _, attr = registries[what].partition(":")
    registry: Registry[Any] = getattr(importlib.import_module(module), attr)
    for name in registry.names():
        typer.echo(name)


@app.command("validate")
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config file (keys, types, ranges, algorithm and task names) without running it."""
    try:
        check_names(config_mod.load(config, set_ or []))
    except USER_ERRORS as err:
        fail(err)
    typer.echo(f"{config}: ok")


@app.command("describe")
def describe(
    kind: Annotated[str, typer.Argument(help="task | algorithm")],
    name: Annotated[str, typer.Argument(help="a name from `ilora list tasks|algorithms`")],
) -> None:
    """Print every option of a task or an algorithm: type, default and help."""
    from ilora import describe as describe_mod

    describers = {"task": describe_mod.describe_task, "algorithm": describe_mod.describe_algorithm}
    try:
        if kind not in describers:
            raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(describers)}")
        text = describers[kind](name)
    except USER_ERRORS as err:
        fail(err)
    typer.echo(text)
