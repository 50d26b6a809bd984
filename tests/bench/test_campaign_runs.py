"""The one run path (``bench.runner``, ``bench.jobs``): a run the engine stops is recorded,
reused and summarised, not lost; a run that raises anything else is a bug and propagates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ilora.bench import dp
from ilora.bench import runner
from ilora.bench.campaign import outcomes
from ilora.bench.jobs import Job
from ilora.bench.jobs import pending
from ilora.bench.jobs import plan_line
from ilora.bench.jobs import run_jobs

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
NAN = ("fed.rounds=3", "faults.nan=1.0")  # every client uploads NaN: stopped in round 1


def test_a_stopped_run_is_summarised_and_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = Job("clean", SMOKE, ("fed.rounds=3", "eval.every=1"), tmp_path / "clean")
    bad = Job("bad", SMOKE, NAN, tmp_path / "bad", record_norms=True)
    (got_clean, _), (summary, records) = outcomes([clean, bad], 1)
    assert "stopped" not in got_clean and got_clean["rounds"] == 3
    assert summary["stopped"].startswith("round 1: 0 of 4 sampled clients")
    assert "non-finite values" in summary["stopped"]
    assert summary["rounds"] == len(records) == 0
    assert math.isnan(summary["final_accuracy"]) and summary["epsilon"] == math.inf
    assert bad.stopped() == summary["stopped"] and bad.decided() and not bad.done()
    assert bad.history() == [] and bad.summary() == {}  # the protocol scores it NaN
    stored = json.loads((bad.run_dir / runner.STOPPED).read_text())
    assert stored == {"reason": summary["stopped"]}
    norms = (bad.run_dir / runner.NORMS).read_text().splitlines()
    assert norms[0] == "round,cid,norm" and len(norms) == 1 + 4  # the 4 NaN uploads produced
    assert "[2/2] bad: STOPPED" in capsys.readouterr().out
    assert pending([clean, bad]) == [] and pending([clean, bad], rerun=True) == [clean, bad]
    assert plan_line([clean, bad], []) == (
        "1 finished, 1 stopped before (--rerun runs them again), 0 to run"
    )
    again = outcomes([bad], 1)
    assert again[0][0] == summary
    assert "1 runs: 0 finished, 1 stopped before, 0 to run" in capsys.readouterr().out


def test_a_stopped_run_of_another_config_is_not_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = Job("bad", SMOKE, NAN, tmp_path / "run")
    run_jobs([bad], 1, print)
    fixed = Job("fixed", SMOKE, ("fed.rounds=3",), tmp_path / "run")
    assert not fixed.decided() and pending([fixed]) == [fixed]
    run_jobs([fixed], 1, print)
    final = 100 * fixed.summary()["final_accuracy"]  # the line names what it prints
    assert f"[1/1] fixed: final accuracy {final:.1f}% in " in capsys.readouterr().out
    assert fixed.done() and not (fixed.run_dir / runner.STOPPED).exists()
    assert bad.stopped() == "" and not bad.decided()


def test_a_run_that_raises_is_a_bug_not_a_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug, not a stop")

    monkeypatch.setattr("ilora.engine.simulation.run", bug)
    broken = Job("broken", SMOKE, ("fed.rounds=3",), tmp_path / "run")
    with pytest.raises(KeyError, match="a bug"):
        run_jobs([broken], 1, print)
    assert not broken.decided() and pending([broken]) == [broken]


def test_stopped_summary_counts_the_completed_rounds() -> None:
    rec = {"bytes_up": 10, "bytes_down": 20, "wall_s": 1.5, "epsilon": 3.0}
    records = [
        {**rec, "round": 1, "accuracy": 0.3, "clients": {"failed": 1, "rejected": 0}},
        {**rec, "round": 2, "clients": {"failed": 0, "rejected": 2}},
    ]
    got = runner.stopped_summary(records, "round 3: stop")
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
