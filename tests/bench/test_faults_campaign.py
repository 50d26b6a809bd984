"""``ilora bench faults``: one run per seed, algorithm and variant, each table with a seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ilora import config
from ilora.bench import faults
from ilora.cli import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fake ``run_in`` of the campaign: it records ``(overrides, cfg, run_dir)`` per run."""
    recorded: list[Any] = []
    real_load = config.load

    def load(path: Path, overrides: list[str]) -> config.ExperimentConfig:
        recorded.append([overrides])
        return real_load(path, overrides)

    def run_in(cfg: config.ExperimentConfig, run_dir: Path, record_norms: bool = False) -> Any:
        recorded[-1] += [cfg, run_dir]
        run_dir.mkdir(parents=True)
        (run_dir / "update_norms.csv").write_text("round,cid,norm\n1,0,8.5\n")
        clients = {"sampled": 10, "succeeded": 10}
        records = [{"round": r, "clients": clients, "events": [], "accuracy": 0.25} for r in (1, 2)]
        summary = {"final_accuracy": 0.3, "best_accuracy": 0.3, "rounds": 1, "wall_s": 1.0}
        return {**summary, "failed_updates": 0, "rejected_updates": 0}, records

    monkeypatch.setattr(faults.config, "load", load)
    monkeypatch.setattr(faults, "run_in", run_in)
    monkeypatch.chdir(ROOT)
    return recorded


def _bench(*args: str) -> str:
    result = CliRunner().invoke(app, ["bench", "faults", "--algorithms", "ilora", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_seed_runs_in_its_own_directory_with_seed_last(
    calls: list[Any], tmp_path: Path
) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--config", "configs/smoke.yaml", "--rounds", "1", "--controls", "ilora"]
    _bench(*args, "--seeds", "0,1", "--out", str(out), "--runs", str(runs))
    dirs = [run_dir.relative_to(runs).as_posix() for _, _, run_dir in calls]
    assert dirs == [f"seed{s}/ilora-{v}" for s in (0, 1) for v in ("faulty", "lost", "clean")]
    assert all(o[-1] == f"seed={cfg.seed}" for o, cfg, _ in calls)
    assert [cfg.seed for _, cfg, _ in calls] == [0, 0, 0, 1, 1, 1]
    for name in ("faults.csv", "accounting.csv", "rounds.csv", "norms.csv"):
        assert {r["seed"] for r in _rows(out / name)} == {"0", "1"}, name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seeds"] == [0, 1] and meta["mix"] == faults.MIX


def test_quick_uses_the_first_seed_only(calls: list[Any], tmp_path: Path) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    _bench("--quick", "--seeds", "3,4,3", "--out", str(out), "--runs", str(runs))
    assert [run_dir.relative_to(runs).as_posix() for _, _, run_dir in calls] == [
        "seed3/ilora-faulty",
        "seed3/ilora-clean",
    ]
    assert json.loads((out / "meta.json").read_text())["seeds"] == [3]
    assert {r["seed"] for r in _rows(out / "faults.csv")} == {"3"}


def test_screen_and_no_clean_choose_the_variants(calls: list[Any], tmp_path: Path) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    _bench("--quick", "--screen", "0", "--no-clean", "--out", str(out), "--runs", str(runs))
    assert [d.name for _, _, d in calls] == ["ilora-faulty", "ilora-screened"]
    assert "fed.min_cosine=0.0" in calls[1][0]


def test_seeds_that_are_not_integers_are_one_line_and_exit_2(calls: list[Any]) -> None:
    result = CliRunner().invoke(app, ["bench", "faults", "--seeds", "0,x"])
    assert result.exit_code == 2
    assert "--seeds takes comma-separated integers" in result.output
    assert calls == []
