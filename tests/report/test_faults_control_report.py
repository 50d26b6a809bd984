"""The fault campaign's target section: faulty − control by seed, Byzantine updates counted."""

from __future__ import annotations

import json
from pathlib import Path

from ilora.bench.resultfiles import write_rows
from ilora.report import faults_control

FINAL = {  # (algorithm, variant, seed) -> final accuracy
    ("ffa-lora", "faulty", 0): 0.400,
    ("ffa-lora", "lost", 0): 0.405,  # -0.5 points
    ("ffa-lora", "faulty", 1): 0.410,
    ("ffa-lora", "lost", 1): 0.413,  # -0.3 points
    ("ilora", "faulty", 0): 0.370,
    ("ilora", "lost", 0): 0.400,  # -3.0 points
    ("ilora", "faulty", 1): 0.380,
    ("ilora", "lost", 1): 0.400,  # -2.0 points
}


def _write(src: Path) -> None:
    src.mkdir()
    runs = [
        {
            "algorithm": alg,
            "variant": variant,
            "seed": seed,
            "final_accuracy": acc,
            "best_accuracy": acc,
            "clip_update_norm": 12.0,
            "max_update_norm": 40.0,
            "robust": "trimmed_mean" if alg == "ffa-lora" else "none",
            "trim_fraction": 0.2 if alg == "ffa-lora" else "",
            "min_cosine": -1.0,
            "mean_aggregation": alg == "ffa-lora",
        }
        for (alg, variant, seed), acc in FINAL.items()
    ]
    write_rows(src / "faults.csv", runs)
    accounting = [
        {"algorithm": alg, "variant": "faulty", "seed": seed, "fault": fault}
        | {"injected": 10, "failed": 0, "rejected": 10 - ok, "accepted": ok}
        for alg in ("ffa-lora", "ilora")
        for seed in (0, 1)
        for fault, ok in (("sign_flip", 4), ("scale", 1), ("nan", 0))
    ]
    write_rows(src / "accounting.csv", accounting)
    meta = {"command": "benchmarks/faults.py --no-clean", "config": "c.yaml", "rounds": 20}
    meta["target_points"] = 1.0
    (src / "meta.json").write_text(json.dumps(meta))


def test_the_gap_to_the_control_is_paired_by_seed_and_judged(tmp_path: Path) -> None:
    _write(tmp_path / "faults_control")
    text = faults_control.render(tmp_path / "faults_control", tmp_path / "img")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if "|" in line}
    ffa, ilora = rows["ffa-lora"], rows["ilora"]
    assert "mean" in ffa and "-0.40 ± 0.14 (seed 0 -0.50, seed 1 -0.30)" in ffa
    assert ffa.rstrip(" |").endswith("met") and "not met" not in ffa and "trimmed_mean" in ffa
    assert "not a mean" in ilora and "-2.50 ± 0.71" in ilora and "not met" in ilora
    assert "10 of 40" in ilora  # sign flips and scaled updates accepted, over both seeds


def test_a_target_missing_from_meta_is_not_recorded_and_judges_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "faults_control")
    meta_path = tmp_path / "faults_control" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["target_points"]
    meta_path.write_text(json.dumps(meta))
    text = faults_control.render(tmp_path / "faults_control", tmp_path / "img")
    assert "target (not recorded)" in text and " met |" not in text
    assert "at most (not recorded) point" in text


def test_the_guard_names_beta_only_for_the_trimmed_mean() -> None:
    from ilora.report.faults import _guard

    row = {"variant": "faulty", "clip_update_norm": 12.0, "max_update_norm": 40.0, "min_cosine": -1}
    assert _guard({**row, "robust": "trimmed_mean", "trim_fraction": 0.2}).endswith(
        "trimmed_mean β=0.2"
    )
    assert _guard({**row, "robust": "median", "trim_fraction": 0.2}) == "clip 12, max 40, median"


def test_the_median_section_is_the_target_section_under_its_own_title(tmp_path: Path) -> None:
    from ilora.report import faults_control_robust_median

    _write(tmp_path / "faults_control_robust_median")
    src = tmp_path / "faults_control_robust_median"
    section = faults_control_robust_median.render(src, tmp_path / "img")
    plain = faults_control.render(src, tmp_path / "img")
    assert section.startswith(faults_control_robust_median.TITLE + "\n")
    assert section.partition("\n")[2] == plain.partition("\n")[2]
