"""The learning-rate and DP sections: every number printed is recomputed here from the rows."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from ilora.report import dp
from ilora.report import lr

PNG = b"\x89PNG\r\n\x1a\n"
# final accuracy per (algorithm, lr) over seeds 0, 1, 2
LR_ACC = {
    ("ilora", 0.002): [0.10, 0.09, 0.11],
    ("ilora", 0.0005): [0.50, 0.54, 0.52],
    ("fedit", 0.002): [0.40, 0.44, 0.42],
    ("fedit", 0.0005): [0.30, 0.31, 0.32],
}


def _write(src: Path, name: str, rows: list[dict[str, Any]], **meta: Any) -> None:
    src.mkdir(parents=True, exist_ok=True)
    with (src / name).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base = {"command": "python benchmarks/x.py", "date": "2026-01-01T00:00:00+0000", "cpus": 2}
    (src / "meta.json").write_text(json.dumps({**base, **meta}))


def _lr_results(src: Path) -> None:
    rows = [
        {"algorithm": alg, "lr": rate, "seed": seed, "final_accuracy": acc}
        for (alg, rate), accs in LR_ACC.items()
        for seed, acc in enumerate(accs)
    ]
    setting = {
        "task": "fashion-mnist",
        "lora": {"rank_policy": "cycle", "ranks": [2, 4, 8, 16], "rank": 8},
        "data": {"partition": "dirichlet", "partition_args": {"alpha": 0.3}},
        "fed": {"rounds": 5},
    }
    _write(src, "lr.csv", rows, preset_lr=0.002, head_lr=0.005, setting=setting)


def test_lr_table_gives_seed_mean_and_std_per_rate(tmp_path: Path) -> None:
    _lr_results(tmp_path / "lr")
    text = lr.render(tmp_path / "lr", tmp_path / "img")
    assert text.startswith("## Learning-rate sensitivity (fashion-mnist)")
    for (_, _), accs in LR_ACC.items():
        pct = [100 * a for a in accs]
        assert f"{statistics.fmean(pct):.2f} ± {statistics.stdev(pct):.2f}" in text
    assert "lr 0.002 (preset)" in text
    assert (tmp_path / "img" / "lr-accuracy.png").read_bytes().startswith(PNG)


def test_lr_sentences_compare_the_preset_rate_with_the_best(tmp_path: Path) -> None:
    _lr_results(tmp_path / "lr")
    text = lr.render(tmp_path / "lr", tmp_path / "img")
    at_preset = statistics.fmean(100 * a for a in LR_ACC[("ilora", 0.002)])
    best = statistics.fmean(100 * a for a in LR_ACC[("ilora", 0.0005)])
    assert (
        f"ilora: {at_preset:.2f}% at the preset's lr 0.002, {best:.2f}% at lr 0.0005 "
        f"({best - at_preset:+.2f} points); that is the sweep's smallest rate, so the optimum "
        "may lie below it." in text
    )
    fedit = statistics.fmean(100 * a for a in LR_ACC[("fedit", 0.002)])
    assert (
        f"fedit: the preset's lr 0.002 is its best ({fedit:.2f}%); that is the sweep's largest "
        "rate, so the optimum may lie above it." in text
    )


def _dp_row(alg: str, sigma: float, acc: float, stopped: str = "") -> dict[str, Any]:
    return {
        "algorithm": alg,
        "noise": "upload" if sigma else "",
        "noise_multiplier": sigma,
        "clip_norm": 4.0 if sigma else "",
        "noise_std_per_entry": 4.0 * sigma,
        "floats_per_upload": 10000,
        "delta": 1e-5,
        "epsilon": 30.0 / sigma if sigma else float("inf"),
        "epsilon_poisson": 5.0 / sigma if sigma else float("inf"),
        "final_accuracy": acc,
        "best_accuracy": 0.4 if not stopped else 0.1,
        "final_personal_accuracy": acc,
        "rounds": 20 if not stopped else 19,
        "stopped": stopped,
        "num_clients": 400,
        "sampled": 50,
        "wall_s": 1.0,
    }


def test_dp_shows_a_stopped_run_as_stopped_not_as_a_number(tmp_path: Path) -> None:
    src = tmp_path / "dp"
    stop = "round 20: 0 of 50 sampled clients delivered an accepted update (non-finite values)"
    rows = [
        _dp_row("ilora", 0, 0.42),
        _dp_row("ilora", 1, float("nan"), stop),
        _dp_row("ffa-lora", 0, 0.40),
        _dp_row("ffa-lora", 1, 0.31),
    ]
    _write(src, "dp.csv", rows, majority_class_accuracy=0.2, clip_norm=4.0, config="c.yaml")
    _write(src, "norms.csv", [{"algorithm": "ilora", "round": 1, "cid": 0, "norm": 4.0}])
    (src / "meta.json").write_text(
        json.dumps({"command": "x", "majority_class_accuracy": 0.2, "clip_norm": 4.0})
    )
    text = dp.render(src, tmp_path / "img")
    assert "| stopped: round 20 |" in text
    assert f"σ = 1 (ε = 30): the engine stopped it in {stop}" in text
    assert "ffa-lora: 40.00% without DP; σ = 1 (ε = 30): 31.00% (-9.00)." in text
    assert "nan" not in text.lower()
    assert (tmp_path / "img" / "dp-accuracy.png").read_bytes().startswith(PNG)


def test_grid_timing_gives_the_invocation_and_says_when_the_machine_was_busy() -> None:
    from ilora.report._quality_text import timing

    rows = [{"task": "t", "wall_s": "4.0"}, {"task": "t", "wall_s": "6.0"}]
    meta = {"workers": 2, "cpus": 2, "invocation_wall_s": 600.0, "runs_run": 2}
    quiet = timing({**meta, "load_average": 2.1}, rows)
    assert "The invocation that wrote these files took 10.0 min to run 2 of the 2 runs." in quiet
    assert "was 2.1 on 2 CPUs with 2 run(s) at a time." in quiet and "inflated" not in quiet
    busy = timing({**meta, "load_average": 6.0}, rows)
    assert "other jobs shared the machine, so these times are inflated." in busy
