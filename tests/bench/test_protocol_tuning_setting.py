"""The protocol's tuning setting: explicit, fixed, named in its directories, never a KeyError.

No run is made here: the runs a test needs are directories written by hand, or none at all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ilora.bench import jobs
from ilora.bench import phases
from ilora.bench import protocol_results
from ilora.bench import tuning
from ilora.bench.jobs import Job
from ilora.bench.protocol import Protocol
from ilora.bench.protocol import Variant
from ilora.bench.protocol import parse_variants
from ilora.cli import app

ROOT = Path(__file__).parents[2]
FEDIT = Variant.parse("fedit")


def _proto(tmp_path: Path, **changes: object) -> Protocol:
    proto = Protocol(
        tasks=("tiny-text",),
        variants=parse_variants("fedit"),
        preset_dir=ROOT / "configs" / "protocol-quick",
        runs=tmp_path / "runs",
        tuned_dir=tmp_path / "tuned",
        n_rates=2,
        low_rate=3e-3,
    )
    return dataclasses.replace(proto, **changes)


def test_the_default_tuning_runs_keep_their_names_and_configs(tmp_path: Path) -> None:
    """The finished runs on disk are found by these exact names and overrides (their configs)."""
    compared = [(("heterogeneous", "homogeneous"), (0.1, 0.5)), (("homogeneous",), (0.5,))]
    for ranks, alphas in compared:  # whatever is compared
        proto = _proto(tmp_path, ranks=ranks, alphas=alphas)
        job = proto.tune_job("tiny-text", FEDIT, 1e-3)
        assert job.run_dir == tmp_path / "runs" / "tiny-text" / "tune" / "fedit" / "lr0.001"
        assert job.overrides == (
            "algorithm=fedit",
            "lora.rank_policy=cycle",
            "lora.ranks=[4,8,16]",
            "data.partition_args.alpha=0.1",
            "seed=100",
            "train.lr=0.001",
            "eval.split=validation",
        )
        horizon = proto.horizon_job("tiny-text", FEDIT, 1e-3)
        assert horizon.run_dir == tmp_path / "runs" / "tiny-text" / "horizon" / "fedit"
        assert proto.tuned_file("tiny-text") == tmp_path / "tuned" / "tiny-text.yaml"


def test_another_tuning_setting_is_named_in_every_directory(tmp_path: Path) -> None:
    proto = _proto(tmp_path, tune_ranks="homogeneous", tune_alpha=0.5)
    job = proto.tune_job("tiny-text", FEDIT, 1e-3)
    assert job.run_dir.relative_to(tmp_path).as_posix() == (
        "runs/tiny-text/tune-homogeneous-a0.5/fedit/lr0.001"
    )
    cfg = job.config()
    assert (cfg.lora.rank_policy, cfg.data.partition_args["alpha"]) == ("uniform", 0.5)
    horizon = proto.horizon_job("tiny-text", FEDIT, 1e-3).run_dir
    assert horizon.parent.name == "horizon-homogeneous-a0.5"
    compared = list(proto.compare_jobs("tiny-text", {"fedit": 1e-3, "centralized": 1e-3}, 2))
    assert {j.run_dir.parent.parent.name for j in compared} == {"compare-homogeneous-a0.5"}
    assert proto.tuned_file("tiny-text").name == "tiny-text-homogeneous-a0.5.yaml"
    with pytest.raises(ValueError, match=r"unknown rank setting\(s\) \['mixed'\]"):
        _proto(tmp_path, tune_ranks="mixed")


def test_missing_tuning_is_one_line_naming_it_and_the_command(tmp_path: Path) -> None:
    proto = _proto(tmp_path)
    with pytest.raises(ValueError) as err:
        phases.tuned_rates(proto, "tiny-text")
    tune_dir = tmp_path / "runs" / "tiny-text" / "tune"
    assert str(err.value) == (
        f"tiny-text: no tuned rate for 'fedit' (no tuning run in {tune_dir / 'fedit'}), "
        f"'centralized' (no tuning run in {tune_dir / 'centralized'}) at heterogeneous alpha "
        "0.1: run `ilora bench protocol --phase tune --tasks tiny-text --variants fedit` first"
    )
    elsewhere = _proto(tmp_path, tune_ranks="homogeneous", tune_alpha=0.5)
    with pytest.raises(ValueError, match="--tune-ranks homogeneous --tune-alpha 0.5` first$"):
        phases.tuned_rates(elsewhere, "tiny-text")
    for step in (
        lambda: phases.horizon(proto, "tiny-text", {"centralized": 1e-3}, 1, print),
        lambda: list(proto.compare_jobs("tiny-text", {"centralized": 1e-3}, 2)),
    ):
        with pytest.raises(ValueError, match=r"no tuned rate for 'fedit' \(not tuned\) at het"):
            step()


def _fake_tuning_run(proto: Protocol, variant: Variant, rate: float, score: float) -> None:
    """Write a finished tuning run of ``variant`` at ``rate`` (its config exactly the job's)."""
    _finish(proto.tune_job("tiny-text", variant, rate), score)


def _finish(job: jobs.Job, score: float) -> None:
    """Write a finished run of ``job`` (its config exactly the job's) with ``score`` %."""
    from ilora import config as config_mod

    job.run_dir.mkdir(parents=True)
    (job.run_dir / "config.yaml").write_text(config_mod.to_yaml(job.config()))
    history = [{"round": r, "accuracy": score / 100} for r in (1, 2, 3, 4)]
    (job.run_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    (job.run_dir / "summary.json").write_text(json.dumps({"final_accuracy": score / 100}))
    assert job.done(), "the fake run must look finished to the protocol"


def test_a_partial_tuning_names_what_is_missing(tmp_path: Path) -> None:
    proto = _proto(tmp_path, variants=(FEDIT,))
    _fake_tuning_run(proto, FEDIT, 3.16e-3, 50.0)
    with pytest.raises(ValueError, match=r"'fedit' \(1 of 2 tuning runs missing\)"):
        phases.tuned_rates(proto, "tiny-text")
    _fake_tuning_run(proto, FEDIT, 1e-2, 60.0)  # the best at the grid's top edge
    with pytest.raises(ValueError, match="'fedit' \\(its best rate is at the grid's edge"):
        phases.tuned_rates(proto, "tiny-text")
    _fake_tuning_run(proto, FEDIT, 3.16e-2, 55.0)  # the extension: now finished
    assert phases.tuned_rates(proto, "tiny-text") == {"fedit": 1e-2}
    shutil.rmtree(proto.tune_job("tiny-text", FEDIT, 1e-2).run_dir)
    with pytest.raises(ValueError, match=r"'fedit' \(1 of 3 tuning runs missing\)"):
        phases.tuned_rates(proto, "tiny-text")


def test_the_tuning_table_says_which_runs_are_unfinished(tmp_path: Path) -> None:
    proto = _proto(tmp_path, variants=(FEDIT,))
    _fake_tuning_run(proto, FEDIT, 3.16e-3, 50.0)
    proto.tune_job("tiny-text", FEDIT, 1e-2).run_dir.mkdir(parents=True)  # begun, not finished
    rows = protocol_results.tune_rows(proto.runs)
    got = [(r["lr"], r["val_score"], r["chosen"], r["finished"]) for r in rows]
    assert got == [(3.16e-3, 50.0, 1, 1), (1e-2, "", 0, 0)]


def test_a_compare_never_replaces_a_finished_run_of_another_horizon(tmp_path: Path) -> None:
    proto = _proto(tmp_path, variants=(FEDIT,), ranks=("heterogeneous",), alphas=(0.1,))
    rates, lines = {"fedit": 1e-3}, []
    first = next(proto.compare_jobs("tiny-text", rates, 2))
    _finish(first, 50.0)  # a finished run at horizon 2; the horizon moves to 3
    with pytest.raises(ValueError) as err:
        phases.compare(proto, "tiny-text", rates, 3, 1, lines.append)
    assert str(err.value).startswith(
        f"tiny-text: 1 comparison run(s) would replace finished runs of another config, e.g. "
        f"{first.run_dir} (fed.rounds 2 → 3); the horizon or a tuned rate moved"
    )
    assert lines == [] and first.done()  # nothing ran, the finished run is intact


def test_one_results_directory_holds_one_tuning_setting(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({"rules": {}}))  # written before the record
    protocol_results.check_tuning(out, _proto(tmp_path))  # the default: accepted
    elsewhere = _proto(tmp_path, tune_ranks="homogeneous", tune_alpha=0.5)
    with pytest.raises(ValueError, match="tuned at heterogeneous alpha 0.1, not at homogeneous"):
        protocol_results.check_tuning(out, elsewhere)
    (out / "meta.json").write_text(json.dumps({"tuning": {"ranks": "homogeneous", "alpha": 0.5}}))
    protocol_results.check_tuning(out, elsewhere)
    with pytest.raises(ValueError, match="pass --out DIR for this one"):
        protocol_results.check_tuning(out, _proto(tmp_path))


def test_compare_without_tuning_is_one_clear_line_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["bench", "protocol", "--phase", "compare", "--quick", "--ranks", "homogeneous"]
    preset = str(ROOT / "configs" / "protocol-quick")
    result = CliRunner().invoke(app, [*args, "--alphas", "0.5", "--preset", preset])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Traceback" not in text and "KeyError" not in text
    assert text.startswith("error: tiny-text: no tuned rate for 'fedit' (no tuning run in")
    assert "at heterogeneous alpha 0.1: run `ilora bench protocol --phase tune" in text
    assert not Path("runs/quick/protocol/results/meta.json").exists()  # refused: not on record


# ---- phases.tune: every variant's grid in one pool, then each round of extensions together
PEAKS = {"fedit": 3.16e-3, "centralized": 3.16e-3, "ilora": 1e-5, "flora": 1e-1}


def _score(label: str, rate: float) -> float:
    """Validation score that falls with the distance (in log10) from the variant's peak."""
    return -round(abs(math.log10(rate) - math.log10(PEAKS[label])), 6)


def _alone(label: str, grid: list[float]) -> float:
    """The rate one variant's tuning alone chooses: extend while the best is at an edge."""
    scores = {r: _score(label, r) for r in grid}
    while (nxt := tuning.extension(scores, grid)) is not None and nxt not in scores:
        scores[nxt] = _score(label, nxt)
    return tuning.choose(scores)


def test_every_variant_tunes_in_one_pool_and_chooses_as_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[str]] = []
    done: set[str] = set()  # the labels of finished runs: what resuming skips

    def record(jobs: Sequence[Job], workers: int, report: object, on_done: object) -> None:
        batches.append(sorted(job.label.split(" tune ")[1] for job in jobs))
        done.update(job.label for job in jobs)

    def pending(jobs: Sequence[Job]) -> list[Job]:
        return [job for job in jobs if job.label not in done]

    def scores(_p: Protocol, _t: str, variant: Variant, rates: list[float]) -> dict[float, float]:
        return {r: _score(variant.label, r) for r in rates}

    monkeypatch.setattr(phases, "run_jobs", record)
    monkeypatch.setattr(phases, "pending", pending)
    monkeypatch.setattr(phases, "_scores", scores)
    proto = _proto(tmp_path, variants=parse_variants("fedit,ilora,flora"), n_rates=3, low_rate=1e-3)
    tuned = phases.tune(proto, "tiny-text", 2, [].append)
    grid = tuning.rate_grid(1e-3, 3)  # 1e-3, 3.16e-3, 1e-2
    assert {t.variant.label: t.rate for t in tuned} == {v: _alone(v, grid) for v in PEAKS}
    assert len(batches[0]) == 4 * 3  # every variant's grid (centralized's too) in one pool
    # then one extension per variant still at an edge, together: ilora down, flora up
    assert batches[1:] == [
        ["flora lr=0.0316", "ilora lr=0.000316"],
        ["flora lr=0.1", "ilora lr=0.0001"],
        ["flora lr=0.316", "ilora lr=3.16e-05"],  # flora checks past its best; ilora's last
    ]
    assert [t.at_edge for t in tuned if t.variant.label in ("ilora", "flora")] == [True, False]
    assert "per_algorithm" in (tmp_path / "tuned" / "tiny-text.yaml").read_text()
