"""The protocol section: every interval and paired difference recomputed here with SciPy."""

from __future__ import annotations

import json
from pathlib import Path

from scipy import stats as sp

from ilora.bench.resultfiles import write_rows
from ilora.report import _claims
from ilora.report import protocol

# final test accuracy per (variant, seed) in one setting; centralized ran at alpha 0.1 only
ACC = {
    "fedit": [0.50, 0.52, 0.49, 0.51, 0.50],
    "ilora": [0.55, 0.58, 0.53, 0.57, 0.56],
    "ilora-s": [0.51, 0.49, 0.53, 0.50, 0.52],
    "centralized": [0.70, 0.71, 0.69, 0.70, 0.72],
}


def _results(src: Path) -> None:
    runs = [
        {
            "task": "healthnews",
            "ranks": "heterogeneous",
            "alpha": 0.1,
            "seed": seed,
            "variant": variant,
            "algorithm": variant,
            "lr": 1e-3,
            "final_accuracy": acc,
            "personal_accuracy": "",
        }
        for variant, accs in ACC.items()
        for seed, acc in enumerate(accs)
    ]
    runs += [{**r, "alpha": 0.5} for r in runs if r["variant"] == "fedit"]
    # a setting begun: one seed of one method, beside the centralized line's five
    runs += [{**runs[0], "ranks": "homogeneous"}]
    runs += [{**r, "ranks": "homogeneous"} for r in runs if r["variant"] == "centralized"]
    write_rows(src / "runs.csv", runs)
    tune = [
        {"task": "healthnews", "variant": v, "lr": lr, "val_score": score, "chosen": c, "failed": 0}
        for v in ("fedit", "ilora")
        for lr, score, c in ((1e-3, 40.0, 0), (3.16e-3, 45.0, 1), (1e-2, 30.0, 0))
    ]
    write_rows(src / "tune.csv", tune)
    meta = {"date": "2026-12-04T00:00:00+0000", "cpus": 2, "command": "ilora bench protocol"}
    meta |= {"commands": {"tune": ["ilora bench protocol --phase tune"]}}
    meta |= {"wall_s_by_phase": {"tune": 3600.0}, "quick": False}
    (src / "meta.json").write_text(json.dumps(meta))


def _ci(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    low, high = sp.t.interval(0.95, len(xs) - 1, loc=mean, scale=sp.sem(xs))
    return mean, (high - low) / 2


def test_protocol_section_states_intervals_and_paired_differences(tmp_path: Path) -> None:
    _results(tmp_path / "protocol")
    text = protocol.render(tmp_path / "protocol", tmp_path / "img")
    mean, half = _ci([100 * a for a in ACC["ilora"]])
    assert f"| ilora | {mean:.2f} ± {half:.2f} |" in text
    diff, dhalf = _ci([100 * (a - b) for a, b in zip(ACC["ilora"], ACC["fedit"], strict=True)])
    assert f"+{diff:.2f} ± {dhalf:.2f} ▲" in text  # the interval excludes 0: ahead
    d2, h2 = _ci([100 * (a - b) for a, b in zip(ACC["ilora-s"], ACC["fedit"], strict=True)])
    assert f"{d2:+.2f} ± {h2:.2f} |" in text  # includes 0: no mark
    assert "| fedit | 3.16e-03 |" not in text and "| fedit | 0.00316 | 45.00 |" in text
    assert (tmp_path / "img" / "protocol-lr-healthnews.png").is_file()
    # the centralized line stands for every alpha; the claims name what was not measured
    assert text.count("| centralized |") == 3  # heterogeneous 0.1 and 0.5, homogeneous 0.1
    assert "not measured (add `ilora+redistribute=svd`)" in text
    assert "**healthnews, heterogeneous ranks, Dirichlet α=0.1** (5 seeds)" in text
    assert "**healthnews, homogeneous ranks, Dirichlet α=0.1** (1 seed)" in text


def test_the_rules_name_the_tuning_setting(tmp_path: Path) -> None:
    _results(tmp_path / "protocol")
    meta = json.loads((tmp_path / "protocol" / "meta.json").read_text())
    rules = {"score_window": 3, "max_extensions": 3, "plateau_window": 5}
    meta |= {"rules": {**rules, "plateau_tol_points": 0.5, "max_rounds": 60}, "tune_seed": 100}
    (tmp_path / "protocol" / "meta.json").write_text(json.dumps(meta))
    text = protocol.render(tmp_path / "protocol", tmp_path / "img")
    assert "tuning seed 100 in one tuning setting (heterogeneous ranks, α = 0.1)" in text
    meta["tuning"] = {"ranks": "homogeneous", "alpha": 0.5}  # recorded since issue 16
    (tmp_path / "protocol" / "meta.json").write_text(json.dumps(meta))
    text = protocol.render(tmp_path / "protocol", tmp_path / "img")
    assert "tuning seed 100 in one tuning setting (homogeneous ranks, α = 0.5)" in text


def test_the_control_scope_ablations_are_reference_ilora_s_minus_the_variant() -> None:
    ref, head = [51.0, 49.0, 53.0, 50.0, 52.0], [40.0, 41.5, 39.0, 42.0, 40.5]
    cells = {
        ("healthnews", "heterogeneous", 0.1): {
            "ilora-s": dict(enumerate(ref)),
            "ilora-s+control_scope=head": dict(enumerate(head)),
        }
    }
    text = _claims.ablations(cells)
    diff, half = _ci([a - b for a, b in zip(ref, head, strict=True)])
    assert (
        "- control variates on every tensor (reference) against on the head only: "
        f"ilora-s − ilora-s+control_scope=head: healthnews heterogeneous α=0.1: "
        f"+{diff:.2f} ± {half:.2f} ▲."
    ) in text
    assert "ilora-s − ilora-s+control_scope=adapters: not measured (add " in text
    assert "`ilora-s+control_scope=adapters`" in text


def test_machine_time_per_task_is_each_tasks_run_hours_over_the_workers(tmp_path: Path) -> None:
    _results(tmp_path / "protocol")
    meta = json.loads((tmp_path / "protocol" / "meta.json").read_text())
    by_task = {"a,b": {"tune": 7200.0, "compare": 3600.0}, "c": {"tune": 1800.0, "horizon": 900}}
    (tmp_path / "protocol" / "meta.json").write_text(
        json.dumps({**meta, "run_seconds_by_task": by_task})
    )
    text = protocol.render(tmp_path / "protocol", tmp_path / "img")
    assert "| a, b | 2.00 | 0.00 | 1.00 | 3.00 | 1.50 |" in text  # 2 cpus in the fixture
    assert "| c | 0.50 | 0.25 | 0.00 | 0.75 | 0.38 |" in text
    assert "Machine time per task" not in protocol.render(tmp_path / "nothing", tmp_path / "img")


def test_the_swing_under_each_table_is_the_median_range_of_the_last_evaluations(
    tmp_path: Path,
) -> None:
    src = tmp_path / "protocol"
    _results(src)
    meta = json.loads((src / "meta.json").read_text())
    meta["rules"] = {"score_window": 3, "max_extensions": 3, "plateau_tol_points": 0.5}
    meta["rules"] |= {"plateau_window": 5, "max_rounds": 60}
    (src / "meta.json").write_text(json.dumps(meta))
    # fedit swings between classes at the end; centralized is steady (it ran at alpha 0.1 only)
    evals = {
        ("fedit", 0.1): [[0.70, 0.42, 0.58, 0.42], [0.60, 0.70, 0.71, 0.69], [0.5, 0.6, 0.7, 0.6]],
        ("centralized", 0.1): [[0.60, 0.75, 0.76, 0.755]],
        ("fedit", 0.5): [[0.70, 0.71]],  # fewer evaluations than the window: no swing
        ("fedsa-lora", 0.1): [[0.11, 0.11, 0.11]],  # personalized: its global model is not it
    }
    rows = [
        {"task": "healthnews", "ranks": "heterogeneous", "alpha": alpha, "seed": seed}
        | {"variant": v, "round": 6 * (i + 1), "accuracy": acc}
        for (v, alpha), per_seed in evals.items()
        for seed, accs in enumerate(per_seed)
        for i, acc in enumerate(accs)
    ]
    rows += [{**rows[0], "round": 7, "accuracy": ""}]  # a round without an evaluation
    write_rows(src / "rounds.csv", rows)
    tune = protocol.read_csv(src / "tune.csv")
    tune = [{**r, "metric": "accuracy"} for r in tune]
    tune += [{**tune[0], "variant": "fedsa-lora", "metric": "personal_accuracy"}]
    write_rows(src / "tune.csv", tune)
    text = protocol.render(src, tmp_path / "img")
    fedit = sorted([58 - 42, 71 - 69, 70 - 60])[1]  # the median of the three seeds' ranges
    central = 76 - 75
    line = "Swing at the end (range of the last 3 test evaluations of the global model, points"
    words = "; median over seeds; a large one makes the final accuracy a draw from it; "
    assert f"{line}{words}personalized methods have none): centralized " in text
    assert "fedsa-lora 0.0" not in text
    assert f"centralized {central:.1f}, fedit {fedit:.1f}." in text  # heterogeneous, alpha 0.1
    assert text.count(line) == 2  # alpha 0.5: the centralized line only; homogeneous: none
    assert f"have none): centralized {central:.1f}.\n" in text
