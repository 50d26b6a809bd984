"""``benchmarks/faults.py``: one run per seed, algorithm and variant, each table with a seed."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ilora import config

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def campaign(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, list[Any]]:
    """The campaign script with ``run_in`` faked: it records ``(overrides, cfg, run_dir)``."""
    sys.modules.setdefault("_runs", _load("_runs", ROOT / "benchmarks" / "_runs.py"))
    module = _load("bench_faults", ROOT / "benchmarks" / "faults.py")
    calls: list[Any] = []
    real_load = config.load

    def load(path: Path, overrides: list[str]) -> config.ExperimentConfig:
        calls.append([overrides])
        return real_load(path, overrides)

    def run_in(cfg: config.ExperimentConfig, run_dir: Path, record_norms: bool = False) -> Any:
        calls[-1] += [cfg, run_dir]
        run_dir.mkdir(parents=True)
        (run_dir / "update_norms.csv").write_text("round,cid,norm\n1,0,8.5\n")
        clients = {"sampled": 10, "succeeded": 10}
        records = [{"round": r, "clients": clients, "events": [], "accuracy": 0.25} for r in (1, 2)]
        summary = {"final_accuracy": 0.3, "best_accuracy": 0.3, "rounds": 1, "wall_s": 1.0}
        return {**summary, "failed_updates": 0, "rejected_updates": 0}, records

    monkeypatch.setattr(module.config, "load", load)
    monkeypatch.setattr(module, "run_in", run_in)
    monkeypatch.chdir(ROOT)
    return module, calls


def _main(module: ModuleType, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["faults.py", "--algorithms", "ilora", *args])
    module.main()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_seed_runs_in_its_own_directory_with_seed_last(
    campaign: tuple[ModuleType, list[Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module, calls = campaign
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--config", "configs/smoke.yaml", "--rounds", "1", "--controls", "ilora"]
    _main(module, monkeypatch, *args, "--seeds", "0,1", "--out", str(out), "--runs", str(runs))
    dirs = [run_dir.relative_to(runs).as_posix() for _, _, run_dir in calls]
    assert dirs == [f"seed{s}/ilora-{v}" for s in (0, 1) for v in ("faulty", "lost", "clean")]
    assert all(o[-1] == f"seed={cfg.seed}" for o, cfg, _ in calls)
    assert [cfg.seed for _, cfg, _ in calls] == [0, 0, 0, 1, 1, 1]
    for name in ("faults.csv", "accounting.csv", "rounds.csv", "norms.csv"):
        assert {r["seed"] for r in _rows(out / name)} == {"0", "1"}, name
    assert json.loads((out / "meta.json").read_text())["seeds"] == [0, 1]


def test_quick_uses_the_first_seed_only(
    campaign: tuple[ModuleType, list[Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module, calls = campaign
    out, runs = tmp_path / "out", tmp_path / "runs"
    _main(module, monkeypatch, "--quick", "--seeds", "3,4", "--out", str(out), "--runs", str(runs))
    assert [run_dir.relative_to(runs).as_posix() for _, _, run_dir in calls] == [
        "seed3/ilora-faulty",
        "seed3/ilora-clean",
    ]
    assert json.loads((out / "meta.json").read_text())["seeds"] == [3]
    assert {r["seed"] for r in _rows(out / "faults.csv")} == {"3"}


def test_seed_list_rejects_what_is_not_an_integer(
    campaign: tuple[ModuleType, list[Any]],
) -> None:
    module, _ = campaign
    assert module.seed_list("2,0,2") == [2, 0]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers"):
        module.seed_list("0,x")
