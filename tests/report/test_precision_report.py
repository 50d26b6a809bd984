"""``ilora bench precision`` and its section: runs paired by seed, the ±1 point rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ilora.bench.precision import collect
from ilora.bench.precision import export
from ilora.report.precision import render
from reference_math import paired_interval


def _run(root: Path, precision: str, alg: str, seed: int, acc: float) -> None:
    d = root / precision / f"{alg}-seed{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"algorithm: {alg}\nseed: {seed}\n")
    (d / "manifest.json").write_text(json.dumps({"seed": seed, "precision": precision}))
    summary = {"final_accuracy": acc, "final_personal_accuracy": acc + 0.1, "rounds": 8,
               "wall_s": 100.0 if precision == "fp32" else 50.0}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))


def _runs(root: Path, diffs: list[float]) -> Path:
    for seed, diff in enumerate(diffs):
        _run(root, "fp32", "fedit", seed, 0.5 + 0.01 * seed)
        _run(root, "bf16", "fedit", seed, 0.5 + 0.01 * seed + diff)
    return root


def test_paired_differences_and_their_interval(tmp_path: Path) -> None:
    diffs = [0.005, -0.004, 0.008]  # points: +0.5, -0.4, +0.8
    out = tmp_path / "results"
    export(_runs(tmp_path / "runs", diffs), out)
    section = render(out, tmp_path / "img")
    assert paired_interval([100 * d for d in diffs]) in section
    assert "2.00x" in section  # wall 100 s fp32 over 50 s bf16
    assert "stays `fp32`" in section  # the interval reaches beyond ±1 point with 3 seeds
    assert (tmp_path / "img" / "precision-diff.png").is_file()


def test_tight_intervals_allow_auto(tmp_path: Path) -> None:
    out = tmp_path / "results"
    export(_runs(tmp_path / "runs", [0.001, 0.0012, 0.0009, 0.0011, 0.001]), out)
    assert "may become `auto`" in render(out, tmp_path / "img")


def test_a_run_in_the_wrong_precision_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, "fp32", "fedit", 0, 0.5)
    (tmp_path / "bf16").mkdir()
    (tmp_path / "fp32" / "fedit-seed0").rename(tmp_path / "bf16" / "fedit-seed0")
    with pytest.raises(ValueError, match="ran in fp32, not bf16"):
        collect(tmp_path)
