"""The protocol resumes from its committed records, and rebuilding its files loses no row.

The runs directory is scratch space: a fresh clone, another machine or a deleted ``runs/``
must continue the protocol where it stopped (its records), and the result files must keep the
rows of runs that are not on disk (a task compared elsewhere).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from bench_cli import quick_protocol

from ilora import config as config_mod
from ilora.bench import jobs
from ilora.bench import phases
from ilora.bench import protocol_results
from ilora.bench import resultfiles
from ilora.bench import runrecords
from ilora.bench.protocol import Protocol
from ilora.bench.protocol import Variant

ROOT = Path(__file__).parents[2]
RATES = (1e-3, 3.16e-3, 1e-2)  # the quick grid of 3: the middle rate wins, no extension


def _proto(tmp_path: Path) -> Protocol:
    """The quick protocol over the grid of 3 rates, one setting and seed; records in results/."""
    quick = quick_protocol(tmp_path)
    records = tmp_path / "results" / "records"
    return dataclasses.replace(quick, n_rates=3, low_rate=RATES[0], records=records)


def _finish(job: jobs.Job, accuracy: float) -> None:
    """Write the run directory a finished run of ``job`` leaves (its text files)."""
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "config.yaml").write_text(config_mod.to_yaml(job.config()))
    lines = [json.dumps({"round": r, "accuracy": accuracy, "wall_s": 1.0}) for r in (1, 2)]
    (job.run_dir / "history.jsonl").write_text("\n".join(lines) + "\n")
    (job.run_dir / "summary.json").write_text(json.dumps({"final_accuracy": accuracy}))
    (job.run_dir / "adapter").mkdir()  # weights: not part of the record


def _tune_jobs(proto: Protocol) -> list[jobs.Job]:
    return [proto.tune_job("tiny-text", v, r) for v in proto.variants for r in RATES]


def _finish_tuning(proto: Protocol) -> list[jobs.Job]:
    """Finish every tuning run, each variant best at the middle rate; keep each as it ends."""
    todo = _tune_jobs(proto)
    for job in todo:
        _finish(job, 0.8 if job.config().train.lr == RATES[1] else 0.6)
        proto.keep(1, job)
    return todo


def test_a_fresh_clone_resumes_from_the_records(tmp_path: Path) -> None:
    proto = _proto(tmp_path)
    done = _finish_tuning(proto)
    before = phases.tuned_rates(proto, "tiny-text")  # read from disk, before and after the loss
    for job in done:  # what a fresh clone lacks: the whole runs directory
        for path in sorted(job.run_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    assert jobs.pending(done) == done
    restored = runrecords.restore(proto.records, proto.runs)  # type: ignore[arg-type]
    assert restored == (len(done), [])
    assert jobs.pending(done) == []  # nothing runs again
    after = phases.tuned_rates(proto, "tiny-text")
    assert after == before == {"fedit": RATES[1], "centralized": RATES[1]}
    kept = sorted(p.name for p in proto.records.rglob("*") if p.is_file())  # type: ignore[union-attr]
    assert set(kept) == {"config.yaml", "history.jsonl", "summary.json"}  # no weights


def test_a_record_never_replaces_a_decided_run_nor_counts_for_another_config(
    tmp_path: Path,
) -> None:
    proto = _proto(tmp_path)
    job = _finish_tuning(proto)[0]
    (job.run_dir / "summary.json").write_text('{"final_accuracy": 0.7}')  # newer than its record
    assert runrecords.restore(proto.records, proto.runs).restored == 0  # type: ignore[arg-type]
    assert json.loads((job.run_dir / "summary.json").read_text()) == {"final_accuracy": 0.7}
    other = dataclasses.replace(proto, extra=("train.steps=3",))  # another config
    assert not other.tune_job("tiny-text", Variant.parse("fedit"), RATES[0]).done()


def test_keep_drops_a_stop_the_run_no_longer_has(tmp_path: Path) -> None:
    runs, records = tmp_path / "runs", tmp_path / "records"
    run = runs / "t" / "tune" / "fedit" / "lr0.001"
    run.mkdir(parents=True)
    assert not runrecords.keep(run, runs, records)  # undecided: nothing to keep
    (run / "stopped.json").write_text('{"reason": "diverged"}')
    assert runrecords.keep(run, runs, records)
    (run / "stopped.json").unlink()  # run again (--rerun), now finished
    (run / "summary.json").write_text("{}")
    assert runrecords.keep_all(runs, records) == 1
    record = records / "t" / "tune" / "fedit" / "lr0.001"
    assert sorted(p.name for p in record.iterdir()) == ["summary.json"]


def _plant(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A secret outside the records, and a decided run and its record: (secret, run, record)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    runs, records = tmp_path / "runs", tmp_path / "records"
    run = runs / "t" / "tune" / "fedit" / "lr0.001"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    assert runrecords.keep(run, runs, records)
    return secret, run, records / "t" / "tune" / "fedit" / "lr0.001"


def test_restore_refuses_a_record_that_links_outside(tmp_path: Path) -> None:
    secret, run, record = _plant(tmp_path)
    shutil.rmtree(tmp_path / "runs")  # a fresh clone
    (record / "history.jsonl").symlink_to(secret)  # a committed link to a file of the user's
    linked_dir = record.parent / "lr0.01"  # and a record directory that is a link
    linked_dir.symlink_to(record)
    restored = runrecords.restore(tmp_path / "records", tmp_path / "runs")
    assert restored == (0, [record])
    assert not run.exists() and not (run.parent / "lr0.01").exists()
    assert "private key" not in {p.read_text() for p in tmp_path.glob("runs/**/*") if p.is_file()}


def test_keep_writes_nothing_through_a_link(tmp_path: Path) -> None:
    secret, run, record = _plant(tmp_path)
    (record / "summary.json").unlink()
    (record / "summary.json").symlink_to(secret)  # keep would overwrite the secret
    with pytest.raises(ValueError, match="summary.json is a symbolic link"):
        runrecords.keep(run, tmp_path / "runs", tmp_path / "records")
    shutil.rmtree(record.parent)
    record.parent.symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a linked parent
    with pytest.raises(ValueError, match="fedit is a symbolic link"):
        runrecords.keep(run, tmp_path / "runs", tmp_path / "records")
    assert secret.read_text() == "private key" and not (tmp_path / "elsewhere").exists()


def test_rebuilding_the_files_keeps_the_rows_of_runs_not_on_disk(tmp_path: Path) -> None:
    proto = _proto(tmp_path)
    out = tmp_path / "results"
    row = {"task": "fashion-mnist", "variant": "fedit", "lr": "0.001", "metric": "accuracy"}
    row |= {"val_score": "50.0", "chosen": "1", "failed": "0", "finished": "1"}
    stale = {**row, "lr": "0.0001"}  # tiny-text's fedit tuning, superseded by the runs on disk
    resultfiles.write_rows(out / "tune.csv", [row, {**stale, "task": "tiny-text"}])
    _finish_tuning(proto)
    protocol_results.write(out, proto, True, "tune", 1.0)
    tune = resultfiles.read_rows(out / "tune.csv")
    assert [r["task"] for r in tune].count("fashion-mnist") == 1  # kept as it was
    mine = [(r["variant"], r["lr"], r["chosen"]) for r in tune if r["task"] == "tiny-text"]
    assert mine == [  # rebuilt from disk: the stale fedit row is gone
        (variant, rate, str(int(rate == "0.00316")))
        for variant in ("centralized", "fedit")
        for rate in ("0.001", "0.00316", "0.01")
    ]
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["run_seconds_by_task"]) == {"tiny-text"}


def test_per_task_seconds_keep_an_old_meta_sum_until_its_tasks_are_on_disk(
    tmp_path: Path,
) -> None:
    from ilora.bench import protocol_seconds

    old = {"tasks": ["b", "a"], "run_seconds_by_phase": {"tune": 10.0}}
    runs = tmp_path / "runs"
    (runs / "c" / "tune" / "x").mkdir(parents=True)
    (runs / "c" / "tune" / "x" / "summary.json").write_text('{"wall_s": 2.5}')
    held = protocol_seconds.by_task(old, runs, "")
    assert held == {"a,b": {"tune": 10.0}, "c": {"tune": 2.5}}
    assert protocol_seconds.by_phase(held) == {"tune": 12.5}
    (runs / "a" / "tune" / "y").mkdir(parents=True)
    (runs / "a" / "tune" / "y" / "summary.json").write_text('{"wall_s": 1.0}')
    assert set(protocol_seconds.by_task({**old, "run_seconds_by_task": held}, runs, "")) == {
        "a",
        "c",
    }


def test_the_command_restores_the_records_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ilora import cli_protocol

    monkeypatch.chdir(tmp_path)
    proto = dataclasses.replace(_proto(tmp_path), runs=tmp_path / "runs/quick/protocol/runs")
    done = _finish_tuning(proto)
    shutil.rmtree(tmp_path / "runs")  # a fresh clone: the records only
    cli_protocol.bench_protocol(
        phase="report",
        quick=True,
        variants="fedit",
        preset=ROOT / "configs" / "protocol-quick",
        out=tmp_path / "results",
    )
    assert jobs.pending(done) == []
    assert len(resultfiles.read_rows(tmp_path / "results" / "tune.csv")) == len(done)
