"""One front door for measurements: every one is ``ilora bench NAME``; no script outside it.

The run campaigns keep their run-directory layout (a finished run of the same config is reused
from there), checked here with the runs faked; ``test_campaign_runs`` runs the real engine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ilora import config
from ilora.bench import dp
from ilora.bench import lr
from ilora.bench.jobs import Job
from ilora.bench.resultfiles import results_dir
from ilora.cli import app
from ilora.cli import bench_app

ROOT = Path(__file__).resolve().parents[2]
SMOKE = Path("configs/smoke.yaml")  # --quick's config, relative to the working directory
NAMES = sorted(str(c.name) for c in bench_app.registered_commands)


def test_the_measurements_are_bench_commands() -> None:
    assert {"dp", "faults", "lr", "flower", "flower-parity", "comm", "quality"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_bench_command_has_help(name: str) -> None:
    result = CliRunner().invoke(app, ["bench", name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_no_measurement_script_outside_the_package() -> None:
    assert not (ROOT / "benchmarks").exists()
    outside = [p for d in ("scripts", "examples") for p in (ROOT / d).rglob("*.py")]
    bench_users = [p for p in outside if re.search(r"ilora\.bench\b", p.read_text())]
    assert not bench_users, f"{bench_users} measure outside `ilora bench`"


def test_the_results_directory_is_one_rule() -> None:
    assert results_dir("dp", quick=False) == Path("results/dp")
    assert results_dir("dp", quick=True) == Path("runs/quick/dp")
    assert results_dir("dp", quick=True, out=Path("mine")) == Path("mine")


WITH_QUICK = (
    "aggregation", "comm", "dp", "engine", "faults", "flower", "lr", "quality", "startup",
    "throughput",
)  # fmt: skip


@pytest.mark.parametrize("name", WITH_QUICK)
def test_a_measurement_with_quick_states_the_one_results_rule(name: str) -> None:
    bench = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    (out,) = [p for p in bench.commands[name].params if p.name == "out"]
    assert out.help == "results directory (default results/<name>; --quick: runs/quick/<name>)"
    assert out.default is None  # results_dir decides


def _fake_outcomes(made: list[Job], processes: list[int] | None = None) -> Any:
    def outcomes(jobs: list[Job], workers: int) -> list[Any]:
        made.extend(jobs)
        (processes if processes is not None else []).append(workers)
        records = [{"round": 1, "clients": {"succeeded": 4}, "accuracy": 0.5, "epsilon": 2.0}]
        summary = {"final_accuracy": 0.5, "best_accuracy": 0.5, "final_personal_accuracy": 0.4}
        summary |= {"rounds": 1, "wall_s": 1.0, "total_bytes_up": 400}
        return [(summary, records)] * len(jobs)

    return outcomes


def test_lr_keeps_its_run_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made: list[Job] = []
    monkeypatch.setattr(lr, "outcomes", _fake_outcomes(made))
    monkeypatch.chdir(ROOT)
    args = ["--algorithms", "fedit,ilora", "--lrs", "1e-3,5e-4", "--seeds", "0,1"]
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = CliRunner().invoke(app, ["bench", "lr", *args, "--out", str(out), "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    lrs = ("0.001", "0.0005")
    assert [job.run_dir.name for job in made] == [
        f"{a}-lr{x}-seed{s}" for a in ("fedit", "ilora") for x in lrs for s in (0, 1)
    ]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["preset_lr"] == config.load(meta["config"]).train.lr
    assert (out / "lr.csv").read_text().count("\n") == 1 + 8


SHARED = ("--config", "--set", "--quick", "--out", "--runs", "--workers")


@pytest.mark.parametrize("name", ["dp", "faults", "lr"])
def test_the_run_campaigns_share_their_options(name: str) -> None:
    result = CliRunner().invoke(app, ["bench", name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert all(re.search(rf"{option}\b", result.output) for option in SHARED), result.output


def test_a_campaign_gets_its_shared_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[Job] = []
    processes: list[int] = []
    monkeypatch.setattr(lr, "outcomes", _fake_outcomes(made, processes))
    monkeypatch.chdir(ROOT)
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--algorithms", "fedit", "--lrs", "1e-3", "--quick", "--set", "train.steps=1"]
    args += ["--workers", "2", "--out", str(out), "--runs", str(runs)]
    result = CliRunner().invoke(app, ["bench", "lr", *args])
    assert result.exit_code == 0, result.output
    assert processes == [2]
    assert [job.run_dir for job in made] == [runs / "fedit-lr0.001-seed0"]
    assert made[0].overrides[-1] == "train.steps=1" and made[0].preset == SMOKE
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"] == str(SMOKE) and meta["quick"] is True
    assert meta["setting"]["fed"]["rounds"] == 2  # --quick: 2 rounds


def test_a_campaign_refuses_zero_workers() -> None:
    result = CliRunner().invoke(app, ["bench", "faults", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_dp_keeps_its_run_directories_and_clips_at_the_median(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[Job] = []
    monkeypatch.setattr(dp, "outcomes", _fake_outcomes(made))
    norms = {"ilora": [[1, 0, 1.0], [1, 1, 3.0]], "ffa-lora": [[1, 0, 2.0]]}
    monkeypatch.setattr(dp, "calibration_norms", lambda path, name, rounds, runs: norms[name])
    monkeypatch.setattr(dp, "majority_share", lambda cfg: 0.25)
    monkeypatch.chdir(ROOT)
    args = ["--config", "configs/smoke.yaml", "--sigmas", "0,1", "--central", "ffa-lora"]
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = CliRunner().invoke(app, ["bench", "dp", *args, "--out", str(out), "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert [job.run_dir.name for job in made] == [
        "ilora-sigma0",
        "ilora-sigma1",
        "ffa-lora-sigma0",
        "ffa-lora-sigma1",
        "ffa-lora-aggregate-sigma1",
    ]
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["clip_norm"], meta["clip_rule"]) == (2.0, dp.CLIP_RULE)
    assert meta["central"] == "ffa-lora"


def test_flower_rejects_an_unknown_runtime_in_one_line() -> None:
    result = CliRunner().invoke(app, ["bench", "flower", "--runtimes", "embedded,cloud"])
    assert result.exit_code == 2
    assert "unknown runtime(s) ['cloud']" in result.output
