"""``ilora export-results``: each run's LoRA rate in ``runs.csv`` and the setting's rate.

Run directories are written by hand (config, summary, manifest, history); the task's data facts
are replaced so no dataset loads. The setting's rate is the one ``ilora compare`` recorded
(``compare.json``), or for a directory without that record the one most methods share.
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


def test_without_a_record_the_setting_rate_is_the_one_most_runs_share(exported: Path) -> None:
    meta = json.loads((exported / "meta.json").read_text())
    assert meta["setting"]["train"]["lr"] == 0.002  # fedloru and flasc: the config's own rate
    assert meta["setting_lr_source"].startswith("inferred: the rate most methods share")


CONFIG = """algorithm: fedit
train: {lr: 0.002}
per_algorithm:
  fedit: {train: {lr: 0.00316}}
  flora: {train: {lr: 0.00316}}
  hetlora: {train: {lr: 0.000316}}
"""


def test_compare_records_the_rate_no_method_brings_its_own(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    assert export.record_setting(tmp_path / "a", config, ["algorithm=hetlora"]) == 0.002
    assert export.recorded_rate(tmp_path / "a") == 0.002
    assert export.record_setting(tmp_path / "b", config, ["train.lr=0.005"]) == 0.005  # --set wins
    assert export.recorded_rate(tmp_path / "c") is None  # a directory from before the record
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "compare.json").write_text('{"setting_lr": "fast"}')
    with pytest.raises(ValueError, match="setting_lr must be a positive number, got 'fast'"):
        export.recorded_rate(tmp_path / "c")


def test_the_recorded_setting_rate_wins_over_the_most_common(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most methods at tuned rates that agree: inferred, the setting would read 0.00316."""
    monkeypatch.setattr(export, "data_facts", lambda cfg: {})
    runs = tmp_path / "runs"
    tuned = {"fedit": 0.00316, "flora": 0.00316, "hetlora": 0.000316, "flasc": 0.002}
    for alg, lr in tuned.items():
        _run(runs, alg, lr)
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    export.record_setting(runs, config, [])
    export.export_compare(runs, tmp_path / "out", ["ilora compare c.yaml"], [])
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["setting"]["train"]["lr"] == 0.002
    assert meta["setting_lr_source"] == "recorded by ilora compare (compare.json)"
    assert export.setting_rate([0.00316, 0.00316, 0.000316, 0.002]) == 0.00316  # the fallback


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
