"""The comparison protocol: its decision rules, and tuning that never reads the test split."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from bench_cli import quick_protocol as _quick

from ilora.bench import jobs
from ilora.bench import phases
from ilora.bench import protocol_plan
from ilora.bench import protocol_results
from ilora.bench import resultfiles
from ilora.bench import tuning
from ilora.bench.protocol import Protocol
from ilora.bench.protocol import Variant
from ilora.bench.protocol import parse_variants
from ilora.engine import setup as setup_mod
from ilora.tasks.base import ArrayDataset
from ilora.tasks.base import TaskData

ROOT = Path(__file__).parents[2]
NAN = math.nan


def _history(accs: list[float]) -> list[dict[str, float]]:
    return [{"round": i + 1, "accuracy": a / 100} for i, a in enumerate(accs)]


def test_rate_grid_is_half_decades() -> None:
    assert tuning.rate_grid(10**-4.5, 6) == [3.16e-5, 1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]
    assert tuning.rate_grid(9e-4, 2) == [1e-3, 3.16e-3]  # snapped to the nearest grid point


def test_score_averages_the_last_evaluations() -> None:
    assert tuning.score(_history([10, 20, 30, 40, 50])) == pytest.approx(40.0)
    assert math.isnan(tuning.score([]))  # a run that was stopped has no history


def test_choose_prefers_the_best_and_the_middle_of_ties() -> None:
    assert tuning.choose({1e-3: 50.0, 3.16e-3: 61.0, 1e-2: NAN}) == 3.16e-3
    assert tuning.choose({1e-4: 40.0, 3.16e-4: 40.0, 1e-3: 40.0, 3.16e-3: 20.0}) == 3.16e-4
    with pytest.raises(ValueError, match="widen the grid"):
        tuning.choose({1e-3: NAN})


def test_extension_past_an_edge_is_bounded_and_needs_a_unique_best() -> None:
    grid = [1e-3, 3.16e-3, 1e-2]
    assert tuning.extension({1e-3: 70.0, 3.16e-3: 60.0, 1e-2: 50.0}, grid) == 3.16e-4
    assert tuning.extension({1e-3: 50.0, 3.16e-3: 60.0, 1e-2: 70.0}, grid) == 3.16e-2
    assert tuning.extension({1e-3: 50.0, 3.16e-3: 70.0, 1e-2: 60.0}, grid) is None
    assert tuning.extension({1e-3: 70.0, 3.16e-3: 70.0, 1e-2: 60.0}, grid) is None  # a tie
    assert tuning.extension({1e-3: NAN, 3.16e-3: NAN, 1e-2: NAN}, grid) == 3.16e-4
    lower = {1e-3: 50.0, 3.16e-3: 40.0, 1e-2: 30.0, 3.16e-4: 55.0, 1e-4: 60.0, 3.16e-5: 65.0}
    assert tuning.extension(lower, grid) is None  # MAX_EXTENSIONS = 3 reached below the grid


def test_plateau_is_no_gain_over_the_best_so_far() -> None:
    rising = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert tuning.plateau_round(_history(rising)) is None
    flat = [10, 30, 50, 60, 60.2, 59.0, 60.3, 59.9, 60.1, 60.0]
    # round 9: the best of rounds 5-9 (60.3) is 0.3 above the best before them (60.0)
    assert tuning.plateau_round(_history(flat)) == 9
    noisy = [10, 30, 50, 60, 58, 61, 59, 60, 58, 60.9]  # round 6 gains 1 point: not yet
    assert tuning.plateau_round(_history(noisy)) is None
    assert tuning.plateau_round(_history([*noisy, 60.5])) == 11  # 61 is the best of 7-11 and before


def test_variants_parse_into_overrides() -> None:
    v = Variant.parse("ilora+redistribute=svd+init_rms=0")
    assert v.overrides() == (
        "algorithm=ilora",
        "per_algorithm.ilora.redistribute=svd",
        "per_algorithm.ilora.init_rms=0",
    )
    assert [x.label for x in parse_variants("fedit,ilora")] == ["fedit", "ilora", "centralized"]
    with pytest.raises(ValueError, match="name\\+key=value"):
        Variant.parse("ilora+svd")


def test_the_horizon_follows_the_best_method_never_an_ablation() -> None:
    variants = parse_variants("fedit,ilora-s,ilora-s+control_scope=head")
    scores = {"fedit": 30.0, "ilora-s": 45.0, "ilora-s+control_scope=head": 50.0}
    assert phases.horizon_variant(variants, scores).label == "ilora-s"
    assert phases.horizon_variant(variants, {**scores, "fedit": 60.0}).label == "fedit"
    ablations = parse_variants("ilora+split=balanced,ilora+init=lora")
    best = phases.horizon_variant(ablations, {"ilora+init=lora": 40.0})
    assert best.label == "ilora+init=lora"  # only ablations given: the best of them


def test_an_unknown_rank_setting_or_a_missing_preset_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown rank setting\(s\) \['mixed'\]; choose from"):
        dataclasses.replace(_quick(tmp_path), ranks=("mixed",))
    missing = tmp_path / "presets"
    with pytest.raises(FileNotFoundError, match="see configs/protocol/\\) or pass --preset DIR"):
        dataclasses.replace(_quick(tmp_path), preset_dir=missing)


class _Poisoned(ArrayDataset):
    def __len__(self) -> int:
        raise AssertionError("tuning read the test split")


def _poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every test split the engine loads fail when read."""
    real = setup_mod.load_data

    def poisoned(task: object) -> TaskData:
        data = real(task)  # type: ignore[arg-type]
        return TaskData(
            data.train, _Poisoned(dict(data.test.inputs), data.test.labels), data.class_names
        )

    monkeypatch.setattr(setup_mod, "load_data", poisoned)


@dataclasses.dataclass(frozen=True)
class _Tuning:
    root: Path  # holds runs/tiny-text/{tune,horizon} and tuned/
    rates: dict[str, float]
    horizon: phases.Horizon
    lines: list[str]


@pytest.fixture(scope="module")
def poisoned_tuning(tmp_path_factory: pytest.TempPathFactory) -> _Tuning:
    """The quick protocol's tuning and horizon, run once for the tests below with the test split
    poisoned (in-process: the patch applies); each test works on its own copy of the runs."""
    root, lines = tmp_path_factory.mktemp("protocol"), []
    with pytest.MonkeyPatch.context() as monkeypatch:
        _poison(monkeypatch)
        tuned = phases.tune(_quick(root), "tiny-text", 1, lines.append)
        rates = {t.variant.label: t.rate for t in tuned}
        found = phases.horizon(_quick(root), "tiny-text", rates, 1, lines.append)
    return _Tuning(root, rates, found, lines)


def _copy(tuning: _Tuning, tmp_path: Path) -> Protocol:
    """Return the quick protocol in ``tmp_path`` holding a copy of ``tuning``'s runs."""
    for phase in ("tune", "horizon"):
        runs = Path("runs") / "tiny-text" / phase
        shutil.copytree(tuning.root / runs, tmp_path / runs)
    shutil.copytree(tuning.root / "tuned", tmp_path / "tuned")
    return _quick(tmp_path)


def test_tuning_never_reads_the_test_split(
    poisoned_tuning: _Tuning, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison(monkeypatch)
    proto, lines = _copy(poisoned_tuning, tmp_path), list(poisoned_tuning.lines)
    rates, found = poisoned_tuning.rates, poisoned_tuning.horizon
    assert sum("horizon" in line for line in lines) == 2  # centralized and fedit, poisoned too
    assert not [line for line in lines if "STOPPED" in line], lines
    assert set(rates) == {"fedit", "centralized"} and 1 <= found.rounds <= 7
    assert "per_algorithm" in (tmp_path / "tuned" / "tiny-text.yaml").read_text()
    # the comparison itself reads the test split: with the patch in place it must fail
    with pytest.raises(AssertionError, match="tuning read the test split"):
        phases.compare(proto, "tiny-text", rates, 2, 1, lines.append)


def test_compare_runs_at_the_tuned_rates_and_writes_the_results(
    poisoned_tuning: _Tuning, tmp_path: Path
) -> None:
    proto, lines, rates = _copy(poisoned_tuning, tmp_path), [], poisoned_tuning.rates
    assert phases.tuned_rates(proto, "tiny-text") == rates  # recomputed from disk, no runs
    compared = phases.compare(proto, "tiny-text", rates, 2, 1, lines.append)
    assert all(j.done() for j in compared) and len(compared) == 4  # 2 variants x 2 seeds
    assert {j.config().train.lr for j in compared} == set(rates.values())
    assert {j.config().eval.every for j in compared} == {proto.compare_every}
    assert jobs.pending(compared) == []  # resumable: nothing left to run
    out = tmp_path / "results"
    assert protocol_results.write(out, proto, True, "compare", 1.0) == 4
    for name in ("tune.csv", "runs.csv", "rounds.csv", "meta.json"):
        assert (out / name).is_file(), name
    tune_csv = resultfiles.read_rows(out / "tune.csv")
    flags = [(r["chosen"], r["failed"], r["finished"]) for r in tune_csv]
    assert flags.count(("1", "0", "1")) == 2  # one choice per variant (not failed, finished)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tuning"] == {"ranks": "heterogeneous", "alpha": 0.1}
    assert set(meta["run_seconds_by_phase"]) == {"tune", "horizon", "compare"}
    assert meta["run_seconds_by_phase"]["compare"] > 0  # counted from the runs themselves
    # --phase report (after a stop): the files again, no time added to any phase
    assert protocol_results.write(out, proto, True, "report", 0.0) == 4
    again = json.loads((out / "meta.json").read_text())
    assert again["wall_s_by_phase"] == meta["wall_s_by_phase"] == {"compare": 1.0}


def test_a_compare_over_a_subset_of_the_axes_reuses_the_default_tuning(
    poisoned_tuning: _Tuning, tmp_path: Path
) -> None:
    """Homogeneous ranks at alpha 0.5 alone (issue 16: was ``KeyError: 'fedit'``): the rates and
    the horizon tuned at the default setting are found on disk, and nothing runs again."""
    part = dataclasses.replace(_copy(poisoned_tuning, tmp_path), ranks=("homogeneous",))
    assert part.alphas == (0.5,) and (part.tune_ranks, part.tune_alpha) == ("heterogeneous", 0.1)
    rates, lines = poisoned_tuning.rates, []
    assert phases.tuned_rates(part, "tiny-text") == rates
    assert phases.horizon(part, "tiny-text", rates, 1, lines.append) == poisoned_tuning.horizon
    assert lines == []  # both horizon runs reused
    compared = list(part.compare_jobs("tiny-text", rates, 2))
    where = {j.run_dir.relative_to(part.runs).as_posix(): j.config() for j in compared}
    assert sorted(where) == [
        "tiny-text/compare/homogeneous-a0.1/centralized-seed0",  # pooled: at the tuning alpha
        "tiny-text/compare/homogeneous-a0.1/centralized-seed1",
        "tiny-text/compare/homogeneous-a0.5/fedit-seed0",
        "tiny-text/compare/homogeneous-a0.5/fedit-seed1",
    ]
    assert {c.lora.rank_policy for c in where.values()} == {"uniform"}
    assert {c.train.lr for c in where.values()} == set(rates.values())


def test_personalized_methods_are_tuned_on_their_clients_models(tmp_path: Path) -> None:
    proto = dataclasses.replace(_quick(tmp_path), extra=("eval.every=3",))
    personal, global_ = Variant.parse("fedsa-lora"), Variant.parse("fedit")
    assert (personal.metric, global_.metric) == ("personal_accuracy", "accuracy")
    own = proto.tune_job("tiny-text", personal, 1e-3).config().eval
    assert own.personal_every == own.every == 3  # an own-model evaluation beside each global one
    assert proto.tune_job("tiny-text", global_, 1e-3).config().eval.personal_every == 1
    history = [
        {"round": r, "accuracy": 0.1, "personal_accuracy": p} for r, p in [(1, 0.5), (2, 0.7)]
    ]
    assert tuning.score(history, personal.metric) == pytest.approx(60.0)
    assert tuning.score(history, global_.metric) == pytest.approx(10.0)


def test_tuning_some_variants_again_keeps_the_other_rates(tmp_path: Path) -> None:
    proto = _quick(tmp_path)
    fedit, ilora = Variant.parse("fedit"), Variant.parse("ilora")
    phases.write_tuned(proto, "tiny-text", [phases.Tuned(fedit, {1e-3: 50.0}, 1e-3, False)])
    phases.write_tuned(proto, "tiny-text", [phases.Tuned(ilora, {1e-4: 40.0}, 1e-4, False)])
    text = proto.tuned_file("tiny-text").read_text()
    assert (
        "fedit:\n    train:\n      lr: 0.001" in text
        and "ilora:\n    train:\n      lr: 0.0001" in text
    )


def test_a_stopped_invocation_leaves_its_command_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ilora import cli_protocol

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt  # the user stops the protocol during its first run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(phases, "tune", stopped)
    out = tmp_path / "results"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({"commands": {"tune": ["ilora earlier"]}}))
    with pytest.raises(KeyboardInterrupt):
        cli_protocol.bench_protocol(
            phase="tune", quick=True, preset=ROOT / "configs" / "protocol-quick", out=out
        )
    meta = json.loads((out / "meta.json").read_text())
    assert meta["commands"] == {"tune": ["ilora earlier", resultfiles.command_line()]}
    assert not (out / "runs.csv").exists()  # stopped: no result files, only the command


def _mean_wall_s(root: Path, *phases_: str) -> float:
    """The mean ``wall_s`` of the ``summary.json`` files under ``root``'s ``phases_`` dirs."""
    walls = [
        json.loads(p.read_text())["wall_s"]
        for ph in phases_
        for p in root.glob(f"{ph}/**/summary.json")
    ]
    return sum(walls) / len(walls)


def test_a_plan_before_any_run_counts_every_run_and_times_them_by_the_result_files(
    tmp_path: Path,
) -> None:
    proto = _quick(tmp_path)
    pieces = protocol_plan.plan(proto, "tiny-text")
    # 2 variants (fedit, centralized) x 2 rates; centralized + fedit long; 2 seeds x 2 variants
    assert [(p.phase, p.runs, p.decided, p.left_seconds) for p in pieces] == [
        ("tune", 4, 0, None),
        ("horizon", 2, 0, None),
        ("compare", 4, 0, None),
    ]
    assert "adds up to 3 runs per edge" in pieces[0].open_end
    lines = protocol_plan.render(pieces, 2)
    assert "no finished run of this task" in lines[0]
    assert lines[-1] == "left: 10 runs; 10 of them with no finished run to time them by"
    kept = [{"task": "tiny-text", "wall_s": "10"}, {"task": "tiny-text", "wall_s": "30"}]
    unusable = [{"task": "tiny-text", "wall_s": w} for w in ("", "x", "nan", "-5")]
    other = {"task": "other", "wall_s": "999"}
    timed = protocol_plan.plan(proto, "tiny-text", [*kept, *unusable, other])
    # the task's own rows with a usable time only: 20 s a run
    assert [p.left_seconds for p in timed] == [4 * 20.0, 2 * 20.0, 4 * 20.0]
    assert timed[2].hours(2) == pytest.approx(4 * 20 / 2 / 3600)
    assert protocol_plan.render(timed, 2)[-1] == (
        f"left: 10 runs, ≈ {10 * 20 / 2 / 3600:.2f} h of wall time on 2 worker(s)"
    )
    assert not proto.runs.exists()  # a plan runs nothing


def test_a_plan_counts_the_decided_runs_and_times_the_rest_by_them(
    poisoned_tuning: _Tuning, tmp_path: Path
) -> None:
    proto, rates = _copy(poisoned_tuning, tmp_path), poisoned_tuning.rates
    task_runs = proto.runs / "tiny-text"
    tune, horizon, compare = protocol_plan.plan(proto, "tiny-text")
    n_tune = len(list(task_runs.glob("tune/*/*/summary.json")))  # the grid and its extensions
    assert (tune.runs, tune.decided, tune.left_seconds, tune.open_end) == (n_tune, n_tune, 0, "")
    assert (horizon.runs, horizon.decided) == (2, 2)
    # no comparison run on disk: each of the 4 at the mean of every phase's finished runs
    assert (compare.runs, compare.decided) == (4, 0)
    every = _mean_wall_s(task_runs, "tune", "horizon")
    assert compare.left_seconds == pytest.approx(4 * every)
    phases.compare(proto, "tiny-text", rates, poisoned_tuning.horizon.rounds, 1, [].append)
    *_, compare = protocol_plan.plan(proto, "tiny-text")
    assert (compare.runs, compare.decided, compare.left_seconds) == (4, 4, 0)
    # one fedit run lost: timed by its variant's other finished run, not by the phase's mean
    lost, kept = (task_runs / "compare" / "heterogeneous-a0.5" / f"fedit-seed{s}" for s in (0, 1))
    (lost / "summary.json").unlink()
    *_, compare = protocol_plan.plan(proto, "tiny-text")
    assert (compare.decided, compare.left) == (3, 1)
    assert compare.left_seconds == pytest.approx(_mean_wall_s(kept, "."))
    assert "1 at their variant's mean here" in protocol_plan.render([compare], 1)[0]


def test_the_plan_phase_prints_the_plan_and_writes_no_result_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ilora import cli_protocol

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    preset = ROOT / "configs" / "protocol-quick"
    cli_protocol.bench_protocol(phase="plan", quick=True, preset=preset, out=out)
    printed = capsys.readouterr().out
    # --quick: fedit, ilora and centralized; 4 rates; 2 rank settings x 2 alphas x 2 seeds
    assert "tiny-text tune: 12 runs, 0 decided, 12 to run" in printed
    assert "tiny-text compare: 20 runs" in printed and "left: 34 runs" in printed
    assert not out.exists()  # no command on record, no result file
