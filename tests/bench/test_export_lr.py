"""``ilora export-results``: each run's LoRA rate in ``runs.csv`` and the setting's rate.

Run directories are written by hand (config, summary, manifest, history); the task's data facts
are replaced so no dataset loads.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ilora.bench import export

RATES = {"fedit": 0.00316, "hetlora": 0.000316, "fedloru": 0.002, "flasc": 0.002}


def _run(root: Path, alg: str, lr: float, seed: int = 0) -> None:
    run = root / f"{alg}-seed{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"algorithm: {alg}\nseed: {seed}\ntrain:\n  lr: {lr}\n")
    summary = {"final_accuracy": 0.3, "best_accuracy": 0.3, "mean_agg_error": 0.1,
               "total_bytes_up": 10, "total_bytes_down": 10, "rounds": 1, "wall_s": 1.0,
               "algorithm": alg}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "manifest.json").write_text(json.dumps({"seed": seed}))
    record = {"round": 1, "accuracy": 0.3, "bytes_up": 10, "bytes_down": 10, "wall_s": 1.0}
    (run / "history.jsonl").write_text(json.dumps(record) + "\n")


@pytest.fixture
def exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(export, "data_facts", lambda cfg: {})
    for alg, lr in RATES.items():
        _run(tmp_path / "runs", alg, lr)
    export.export_compare(tmp_path / "runs", tmp_path / "out", ["ilora compare c.yaml"], [])
    return tmp_path / "out"


def test_runs_csv_holds_each_runs_own_rate(exported: Path) -> None:
    with (exported / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["algorithm"]: float(r["lr"]) for r in rows} == RATES


def test_the_setting_rate_is_the_one_most_runs_share(exported: Path) -> None:
    setting = json.loads((exported / "meta.json").read_text())["setting"]
    assert setting["train"]["lr"] == 0.002  # fedloru and flasc: the config's own rate


def test_the_setting_rate_counts_methods_not_seeds(tmp_path: Path) -> None:
    for seed in range(3):
        _run(tmp_path, "fedit", 0.00316, seed)
    _run(tmp_path, "fedloru", 0.002)
    _run(tmp_path, "flasc", 0.002)
    setting = export.shared_setting(sorted(tmp_path.iterdir()))
    assert setting["train"]["lr"] == 0.002


def test_runs_differing_in_more_than_the_rate_still_refuse(tmp_path: Path) -> None:
    _run(tmp_path, "fedit", 0.001)
    _run(tmp_path, "flasc", 0.002)
    cfg = tmp_path / "flasc-seed0" / "config.yaml"
    cfg.write_text(cfg.read_text() + "  steps: 3\n")
    with pytest.raises(ValueError, match="train"):
        export.shared_setting([tmp_path / "fedit-seed0", tmp_path / "flasc-seed0"])


def test_setting_rate_breaks_ties_by_first_met() -> None:
    assert export.setting_rate([0.001, 0.002, 0.002, 0.001]) == 0.001
    assert export.setting_rate([0.003]) == 0.003
