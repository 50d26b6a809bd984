"""``ilora bench exactness`` and its section: labels checked against the runs, paired by seed."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from ilora.bench.exactness import BEFORE, collect, export
from ilora.report.exactness import render


def _run(root: Path, label: str, alg: str, seed: int, acc: float, agg: float = 0.1) -> None:
    ranks, version = label.split("-")
    d = root / label / f"{alg}-seed{seed}"
    d.mkdir(parents=True)
    lora = {"rank_policy": "uniform" if ranks == "equal" else "cycle", "rank": 8}
    per = {alg: dict(BEFORE)} if version == "before" else {}
    config = {"algorithm": alg, "seed": seed, "lora": lora, "per_algorithm": per}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"final_accuracy": acc, "mean_agg_error": agg, "mean_download_error": agg / 10}
    (d / "summary.json").write_text(json.dumps(summary))


def test_paired_before_after_and_errors(tmp_path: Path) -> None:
    gains = [0.012, 0.02, 0.015]
    for seed, gain in enumerate(gains):
        _run(tmp_path / "runs", "mixed-before", "ilora", seed, 0.25, agg=0.2)
        _run(tmp_path / "runs", "mixed-after", "ilora", seed, 0.25 + gain, agg=0.1)
        _run(tmp_path / "runs", "mixed-after", "fedit", seed, 0.3)  # another method: ignored
    out = tmp_path / "results"
    export(tmp_path / "runs", out)
    section = render(out, tmp_path / "img")
    diffs = [100 * g for g in gains]
    half = 4.302652729911275 * statistics.stdev(diffs) / 3**0.5  # t(0.975, 2) s / sqrt(3)
    assert f"{statistics.fmean(diffs):+.2f} ± {half:.2f}" in section
    assert "| ilora | mixed |" in section and "fedit" not in section.split("|---|")[-1]
    assert "0.2000 → 0.1000" in section and "0.0200 → 0.0100" in section


def test_a_run_under_the_wrong_label_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, "equal-after", "ilora-s", 0, 0.3)
    (tmp_path / "mixed-after").mkdir()
    (tmp_path / "equal-after" / "ilora-s-seed0").rename(tmp_path / "mixed-after" / "x")
    with pytest.raises(ValueError, match="does not match its label mixed-after"):
        collect(tmp_path)
