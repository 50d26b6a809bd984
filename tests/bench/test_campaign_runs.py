"""``ilora.bench.campaign``: a run the engine stops is recorded, reused and summarised, not lost."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ilora import config
from ilora.bench import campaign as runs
from ilora.bench import dp

ROOT = Path(__file__).resolve().parents[2]


def test_a_stopped_run_is_summarised_and_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config.load(ROOT / "configs" / "smoke.yaml", ["fed.rounds=3", "eval.every=1"])
    clean, _ = runs.run_in(cfg, tmp_path / "clean")
    assert "stopped" not in clean and clean["rounds"] == 3
    # every client uploads NaN: min_success = 1 stops the run in round 1
    bad = config.load(ROOT / "configs" / "smoke.yaml", ["fed.rounds=3", "faults.nan=1.0"])
    summary, records = runs.run_in(bad, tmp_path / "bad")
    assert summary["stopped"].startswith("round 1: 0 of 4 sampled clients")
    assert "non-finite values" in summary["stopped"]
    assert summary["rounds"] == len(records) == 0
    assert math.isnan(summary["final_accuracy"]) and summary["epsilon"] == math.inf
    capsys.readouterr()
    again, _ = runs.run_in(bad, tmp_path / "bad")
    assert again["stopped"] == summary["stopped"]
    assert "reused" in capsys.readouterr().out


def test_stopped_summary_counts_the_completed_rounds() -> None:
    rec = {"bytes_up": 10, "bytes_down": 20, "wall_s": 1.5, "epsilon": 3.0}
    records = [
        {**rec, "round": 1, "accuracy": 0.3, "clients": {"failed": 1, "rejected": 0}},
        {**rec, "round": 2, "clients": {"failed": 0, "rejected": 2}},
    ]
    got = runs.stopped_summary(records, "round 3: stop")
    assert got["rounds"] == 2 and got["best_accuracy"] == 0.3
    assert (got["total_bytes_up"], got["total_bytes_down"], got["wall_s"]) == (20, 40, 3.0)
    assert (got["failed_updates"], got["rejected_updates"], got["epsilon"]) == (1, 2, 3.0)


def test_dp_table_keeps_the_stop_reason_short() -> None:
    head = "round 7: 0 of 3 sampled clients delivered an accepted update"
    reason = (
        f"{head} (client 0 rejected: non-finite values in x.lora_A; client 1 failed: "
        "crashed during training; client 2 rejected: non-finite values in y.lora_B); the last "
        "checkpoint is intact"
    )
    assert dp.short_reason(reason) == f"{head} (crashed during training; non-finite values)"
    assert dp.short_reason("") == ""
    assert dp.short_reason(head) == head
