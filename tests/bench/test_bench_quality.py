"""``ilora bench quality`` on the tiny synthetic task: result files, resumption, collect-only."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from ilora.cli import app

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/smoke.yaml as the tiny-text preset, 1 round, with personal test shares."""
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    cfg["fed"]["rounds"] = 1
    cfg["train"]["steps"] = 2
    cfg["data"]["local_test_fraction"] = 0.25
    out = tmp_path_factory.mktemp("preset")
    (out / "tiny-text.yaml").write_text(yaml.safe_dump(cfg))
    return out


def grid(preset: Path, root: Path, seeds: str, *extra: str) -> Result:
    return invoke(
        "bench", "quality", "--tasks", "tiny-text", "--preset", preset, "--algorithms", "fedit",
        "--ranks", "heterogeneous", "--alphas", "0.5", "--seeds", seeds, "--workers", "1",
        "--out", root / "out", "--runs-dir", root / "runs", *extra,
    )  # fmt: skip


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]


def test_quality_grid_writes_runs_rounds_and_meta(preset: Path, tmp_path: Path) -> None:
    result = grid(preset, tmp_path, "0")
    assert result.exit_code == 0, result.output
    runs = _rows(tmp_path / "out" / "runs.csv")
    # fedit at alpha 0.5 plus the centralized line (run at the preset's alpha, 0.5)
    assert sorted(r["algorithm"] for r in runs) == ["centralized", "fedit"]
    for row in runs:
        run_dir = Path(row["run_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert float(row["final_accuracy"]) == summary["final_accuracy"]
        assert float(row["personal_accuracy"]) == summary["final_personal_accuracy"]
        assert int(row["bytes_up"]) == summary["total_bytes_up"]
        assert (row["task"], row["ranks"], float(row["alpha"]), row["seed"]) == (
            "tiny-text", "heterogeneous", 0.5, "0",
        )  # fmt: skip
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["lora"]["ranks"] == [2, 4, 8, 16] and config["lora"]["rank_policy"] == "cycle"
        assert config["data"]["partition_args"]["alpha"] == 0.5
    rounds = _rows(tmp_path / "out" / "rounds.csv")
    for row in runs:
        history = _history(Path(row["run_dir"]))
        mine = [r for r in rounds if r["algorithm"] == row["algorithm"]]
        assert len(mine) == len(history) == 1
        assert int(mine[-1]["bytes_up_cum"]) == sum(h["bytes_up"] for h in history)
        assert float(mine[-1]["accuracy"]) == history[-1]["accuracy"]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["runs_expected"] == meta["runs_finished"] == 2
    assert meta["seeds"] == [0] and meta["algorithms"] == ["fedit"] and meta["quick"] is False


def test_quality_grid_skips_finished_runs(preset: Path, tmp_path: Path) -> None:
    assert grid(preset, tmp_path, "0").exit_code == 0
    fedit = tmp_path / "runs" / "tiny-text" / "heterogeneous-a0.5" / "fedit-seed0"
    before = (fedit / "summary.json").read_bytes()
    again = grid(preset, tmp_path, "0,1")
    assert again.exit_code == 0, again.output
    assert "4 runs in the grid: 2 finished, 2 to run" in " ".join(again.output.split())
    assert (fedit / "summary.json").read_bytes() == before
    runs = _rows(tmp_path / "out" / "runs.csv")
    assert sorted((r["algorithm"], r["seed"]) for r in runs) == [
        ("centralized", "0"), ("centralized", "1"), ("fedit", "0"), ("fedit", "1"),
    ]  # fmt: skip
    shutil.rmtree(tmp_path / "out")
    collected = grid(preset, tmp_path, "0,1", "--collect-only")
    assert collected.exit_code == 0, collected.output
    assert _rows(tmp_path / "out" / "runs.csv") == runs


def test_quality_grid_unknown_rank_setting_is_a_clear_error(preset: Path, tmp_path: Path) -> None:
    result = grid(preset, tmp_path, "0", "--ranks", "mixed")
    assert result.exit_code == 2
    assert "unknown rank setting(s) ['mixed']" in " ".join(result.output.split())


def test_a_stopped_run_is_recorded_and_not_run_again_unless_rerun(
    preset: Path, tmp_path: Path
) -> None:
    nan = ("--set", "faults.nan=1.0")  # every upload non-finite: the engine stops in round 1
    fedit = tmp_path / "runs" / "tiny-text" / "heterogeneous-a0.5" / "fedit-seed0"
    first = grid(preset, tmp_path, "0", *nan)
    assert first.exit_code == 0, first.output  # a stopped run does not stop the grid
    assert first.output.count("STOPPED") == 2, first.output
    assert json.loads((fedit / "stopped.json").read_text())["reason"].startswith("round 1: 0 of")
    assert yaml.safe_load((fedit / "config.yaml").read_text())["faults"]["nan"] == 1.0
    assert not (fedit / "summary.json").exists()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert (meta["runs_expected"], meta["runs_finished"]) == (2, 0)
    again = " ".join(grid(preset, tmp_path, "0", *nan).output.split())
    skipped = "0 finished, 2 stopped before (--rerun runs them again), 0 to run"
    assert f"2 runs in the grid: {skipped}" in again
    assert "STOPPED" not in again
    forced = grid(preset, tmp_path, "0", *nan, "--rerun")
    assert "0 finished, 2 to run" in " ".join(forced.output.split())
    assert forced.output.count("STOPPED") == 2, forced.output
    # the record is of that config only: without the override the runs are made, and finish
    fixed = grid(preset, tmp_path, "0")
    assert "0 finished, 2 to run" in " ".join(fixed.output.split()), fixed.output
    assert (fedit / "summary.json").is_file() and not (fedit / "stopped.json").exists()
    assert len(_rows(tmp_path / "out" / "runs.csv")) == 2


def test_a_run_that_raises_ends_the_grid_instead_of_counting_as_decided(
    preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug, not a stop")

    monkeypatch.setattr("ilora.engine.simulation.run", bug)  # --workers 1: in this process
    result = grid(preset, tmp_path, "0")
    assert result.exit_code != 0 and isinstance(result.exception, KeyError)
    runs = list((tmp_path / "runs").rglob("*.json"))
    assert not [p for p in runs if p.name in ("stopped.json", "summary.json")]
