"""``ilora bench scaling`` and its section: conventions recognised from the run, validation only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ilora.bench.scaling import CONVENTIONS
from ilora.bench.scaling import collect
from ilora.bench.scaling import convention_of
from ilora.bench.scaling import export
from ilora.bench.scaling import overrides
from ilora.report.scaling import render
from reference_math import paired_interval

LORA = {"alpha": 16.0, "rank": 8, "rslora": False, "alpha_scales_with_rank": False}


def _run(root: Path, convention: str, alg: str, acc: float, split: str = "validation") -> None:
    d = root / convention / f"{alg}-seed0"
    d.mkdir(parents=True)
    lora = {**LORA, **overrides(CONVENTIONS[convention])}
    config = {"algorithm": alg, "seed": 0, "lora": lora, "eval": {"split": split}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "summary.json").write_text(json.dumps({"final_accuracy": acc, "rounds": 8}))


def test_each_convention_is_read_from_the_run_config() -> None:
    for name, sets in CONVENTIONS.items():
        assert convention_of({**LORA, **overrides(sets)}) == name
    with pytest.raises(ValueError, match="matches none"):
        convention_of({**LORA, "rslora": True, "alpha": 16.0})  # rsLoRA at another alpha


def test_paired_difference_over_methods_and_the_choice(tmp_path: Path) -> None:
    base = {"fedit": 0.30, "hetlora": 0.28, "flexlora": 0.26, "ilora": 0.27}
    gains = {"fedit": 0.020, "hetlora": 0.025, "flexlora": 0.018, "ilora": 0.021}
    for alg, acc in base.items():
        _run(tmp_path / "runs", "alpha-over-r", alg, acc)
        _run(tmp_path / "runs", "rslora", alg, acc + gains[alg])
        _run(tmp_path / "runs", "alpha-prop-r", alg, acc - gains[alg] + 0.02)
    out = tmp_path / "results"
    export(tmp_path / "runs", out)
    section = render(out, tmp_path / "img")
    assert paired_interval([100 * g for g in gains.values()]) in section
    assert "rslora is ahead of `alpha-over-r`" in section  # every pair gains about 2 points
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scales"]["alpha-over-r"]["2"] == 8.0  # 16 / 2
    assert meta["scales"]["alpha-prop-r"]["2"] == 1.0  # 16 / 16 at every rank
    assert meta["scales"]["rslora"]["16"] == 1.0  # 4 / sqrt(16)


def test_no_convention_ahead_keeps_the_presets(tmp_path: Path) -> None:
    for alg, diff in {"fedit": 0.01, "hetlora": -0.012, "ilora": 0.004}.items():
        _run(tmp_path / "runs", "alpha-over-r", alg, 0.3)
        _run(tmp_path / "runs", "rslora", alg, 0.3 + diff)
    export(tmp_path / "runs", tmp_path / "results")
    assert "keep `alpha-over-r` for every method" in render(tmp_path / "results", tmp_path / "i")


def test_a_run_evaluated_on_test_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, "alpha-over-r", "fedit", 0.3, split="test")
    with pytest.raises(ValueError, match="not validation"):
        collect(tmp_path)
