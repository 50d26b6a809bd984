"""Running experiments from the shell: a fresh or resumed run directory, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from ilora import config as config_mod
from ilora.cli_common import console

if TYPE_CHECKING:
    from ilora.engine.checkpoint import Checkpoint
    from ilora.engine.outputs import RunWriter
    from ilora.engine.setup import Experiment


def run_one(
    cfg: config_mod.ExperimentConfig, out: Path, resume: Checkpoint | None = None
) -> dict[str, object]:
    from ilora.engine.outputs import RunWriter
    from ilora.engine.setup import build

    experiment = build(cfg)  # every user error surfaces here, before a run directory exists
    with RunWriter(out, cfg, resume) as writer:
        return progress_run(cfg, experiment, writer, resume)


def progress_run(
    cfg: config_mod.ExperimentConfig,
    experiment: Experiment,
    writer: RunWriter,
    resume: Checkpoint | None,
) -> dict[str, object]:
    """Run ``experiment`` showing progress, writing through ``writer``; return the summary."""
    from ilora.cli_progress import round_progress
    from ilora.engine.simulation import RoundFailedError
    from ilora.engine.simulation import run

    done = 0 if resume is None else resume.round
    title = f"{cfg.algorithm} seed {cfg.seed}"
    with round_progress(console, title, cfg.fed.rounds, done) as show:

        def on_round(record: object) -> None:
            writer.on_round(record)  # type: ignore[arg-type]
            show(record)

        try:
            result = run(
                cfg,
                on_round=on_round,
                exp=experiment,
                on_checkpoint=writer.on_checkpoint,
                resume=resume,
                store_dir=writer.store_dir,
            )
        except RoundFailedError as err:  # too few clients: loud, non-zero, resumable
            console.print(f"[bold red]run failed:[/] {escape(str(err))}")
            raise typer.Exit(code=3) from None
    return writer.finish(result)


def resume_point(out: Path) -> Checkpoint | None:
    """Return the checkpoint to continue the run in ``out`` from, reporting skipped files."""
    from ilora.engine.checkpoint import load_latest
    from ilora.engine.outputs import CHECKPOINTS

    ckpt, skipped = load_latest(out / CHECKPOINTS)
    for message in skipped:
        console.print(f"[yellow]warning:[/] {message}")
    if ckpt is None:
        console.print("no valid checkpoint: the run starts again from round 1")
    else:
        console.print(f"resuming after round {ckpt.round}")
    return ckpt


def finished_run(cfg: config_mod.ExperimentConfig, out: Path) -> bool:
    """Return True if ``out`` holds a finished run of exactly ``cfg`` (see ``bench.runner``)."""
    from ilora.bench.runner import finished

    return finished(cfg, out)


def record_setting(out: Path, config: Path, overrides: list[str]) -> None:
    """Record the setting's LoRA rate in ``out`` for ``export-results`` (``bench.export``)."""
    from ilora.bench.export import record_setting as record

    record(out, config, overrides)


def check_names(cfg: config_mod.ExperimentConfig) -> None:
    from ilora.engine.setup import validate

    validate(cfg)


def fresh_out(cfg: config_mod.ExperimentConfig, out: Path | None, overwrite: bool) -> Path:
    """Return the run directory: ``out`` unless it holds a run (refused), or a new default."""
    from ilora.engine.outputs import new_run_dir
    from ilora.engine.outputs import refuse_existing_run

    if out is None:
        return new_run_dir(Path("runs"), f"{cfg.algorithm}-{cfg.task}-seed{cfg.seed}")
    if not overwrite:
        refuse_existing_run(out)
    return out
