"""``ilora bench faults``: one run per seed, algorithm and variant, each table with a seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ilora.bench import faults
from ilora.bench.jobs import Job
from ilora.cli import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Job]:
    """Fake the campaign's runs: record every job, give each a made-up outcome."""
    recorded: list[Job] = []

    def outcomes(jobs: list[Job], workers: int) -> list[Any]:
        recorded.extend(jobs)
        clients = {"sampled": 10, "succeeded": 10}
        records = [{"round": r, "clients": clients, "events": [], "accuracy": 0.25} for r in (1, 2)]
        summary = {"final_accuracy": 0.3, "best_accuracy": 0.3, "rounds": 1, "wall_s": 1.0}
        for job in jobs:
            job.run_dir.mkdir(parents=True)
            (job.run_dir / "update_norms.csv").write_text("round,cid,norm\n1,0,8.5\n")
        return [({**summary, "failed_updates": 0, "rejected_updates": 0}, records)] * len(jobs)

    monkeypatch.setattr(faults, "outcomes", outcomes)
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
    calls: list[Job], tmp_path: Path
) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--config", "configs/smoke.yaml", "--rounds", "1", "--controls", "ilora"]
    _bench(*args, "--seeds", "0,1", "--out", str(out), "--runs", str(runs))
    dirs = [job.run_dir.relative_to(runs).as_posix() for job in calls]
    assert dirs == [f"seed{s}/ilora-{v}" for s in (0, 1) for v in ("faulty", "lost", "clean")]
    assert all(job.overrides[-1] == f"seed={job.config().seed}" for job in calls)
    assert [job.config().seed for job in calls] == [0, 0, 0, 1, 1, 1]
    assert all(job.record_norms for job in calls)
    for name in ("faults.csv", "accounting.csv", "rounds.csv", "norms.csv"):
        assert {r["seed"] for r in _rows(out / name)} == {"0", "1"}, name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seeds"] == [0, 1] and meta["mix"] == faults.MIX


def test_quick_uses_the_first_seed_only(calls: list[Job], tmp_path: Path) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    _bench("--quick", "--seeds", "3,4,3", "--out", str(out), "--runs", str(runs))
    assert [job.run_dir.relative_to(runs).as_posix() for job in calls] == [
        "seed3/ilora-faulty",
        "seed3/ilora-clean",
    ]
    assert json.loads((out / "meta.json").read_text())["seeds"] == [3]
    assert {r["seed"] for r in _rows(out / "faults.csv")} == {"3"}


def test_screen_and_no_clean_choose_the_variants(calls: list[Job], tmp_path: Path) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    _bench("--quick", "--screen", "0", "--no-clean", "--out", str(out), "--runs", str(runs))
    assert [job.run_dir.name for job in calls] == ["ilora-faulty", "ilora-screened"]
    assert "fed.min_cosine=0.0" in calls[1].overrides


def test_seeds_that_are_not_integers_are_one_line_and_exit_2(calls: list[Job]) -> None:
    result = CliRunner().invoke(app, ["bench", "faults", "--seeds", "0,x"])
    assert result.exit_code == 2
    assert "--seeds takes comma-separated integers" in result.output
    assert calls == []
