"""``ilora bench exactness`` and its section: labels checked against the runs, paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ilora.bench.exactness import BEFORE
from ilora.bench.exactness import collect
from ilora.bench.exactness import export
from ilora.report.exactness import render
from reference_math import paired_interval


def _run(root: Path, label: str, alg: str, seed: int, acc: float, agg: float = 0.1) -> None:
    ranks, version = label.split("-")
    d = root / label / f"{alg}-seed{seed}"
    d.mkdir(parents=True)
    lora = {"rank_policy": "uniform" if ranks == "equal" else "cycle", "rank": 8}
    options = {"before": BEFORE.get(alg, {}), "svd": {"redistribute": "svd"}}.get(version, {})
    per = {alg: dict(options)} if options else {}
    config = {"algorithm": alg, "seed": seed, "lora": lora, "per_algorithm": per}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"final_accuracy": acc, "mean_agg_error": agg, "mean_download_error": agg / 10}
    (d / "summary.json").write_text(json.dumps(summary))


def test_paired_before_after_and_errors(tmp_path: Path) -> None:
    gains = [0.012, 0.02, 0.015]
    for seed, gain in enumerate(gains):
        _run(tmp_path / "runs", "mixed-before", "ilora", seed, 0.25, agg=0.2)
        _run(tmp_path / "runs", "mixed-after", "ilora", seed, 0.25 + gain, agg=0.1)
        _run(tmp_path / "runs", "mixed-after", "fedsa-lora", seed, 0.3)  # unchanged: ignored
    out = tmp_path / "results"
    export(tmp_path / "runs", out)
    section = render(out, tmp_path / "img")
    assert paired_interval([100 * g for g in gains]) in section
    assert "| ilora | mixed |" in section and "fedsa-lora" not in section
    assert "fedit, fedloru, flasc, hetlora, pfedloru: `rescale_b: False`" in section
    assert "0.2000 → 0.1000" in section and "0.0200 → 0.0100" in section


def test_the_svd_option_is_paired_with_the_default(tmp_path: Path) -> None:
    for seed, (qr, svd) in enumerate([(0.26, 0.27), (0.24, 0.26), (0.3, 0.315)]):
        _run(tmp_path / "runs", "mixed-after", "ilora", seed, qr)
        _run(tmp_path / "runs", "mixed-svd", "ilora", seed, svd)
    export(tmp_path / "runs", tmp_path / "out")
    section = render(tmp_path / "out", tmp_path / "img")
    assert "| ilora | mixed | 26.67 ± " in section
    assert f"{paired_interval([1.0, 2.0, 1.5])} | ahead |" in section
    assert "`redistribute: svd`" in section


def test_a_run_under_the_wrong_label_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, "equal-after", "ilora-s", 0, 0.3)
    (tmp_path / "mixed-after").mkdir()
    (tmp_path / "equal-after" / "ilora-s-seed0").rename(tmp_path / "mixed-after" / "x")
    with pytest.raises(ValueError, match="does not match its label mixed-after"):
        collect(tmp_path)


def _grid_csv(path: Path, rows: list[tuple[str, int, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["task,ranks,alpha,seed,algorithm,final_accuracy,personal_accuracy,mean_agg_error"]
    lines += [f"healthnews,heterogeneous,0.3,{s},{a},{acc},,0.1" for a, s, acc in rows]
    path.write_text("\n".join(lines) + "\n")


def test_the_grid_is_paired_with_the_committed_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ilora.bench.exactness as exactness

    before = tmp_path / "results" / "quality" / "runs.csv"
    _grid_csv(before, [("ilora", 0, 0.2), ("ilora", 1, 0.22), ("centralized", 0, 0.5),
                       ("centralized", 1, 0.52), ("fedit", 0, 0.3)])  # fmt: skip
    _grid_csv(tmp_path / "runs" / "grid" / "runs.csv",
              [("ilora", 0, 0.25), ("ilora", 1, 0.26), ("centralized", 0, 0.5),
               ("centralized", 1, 0.52)])  # fmt: skip
    _run(tmp_path / "runs", "mixed-after", "ilora", 0, 0.3)
    monkeypatch.setattr(exactness, "GRID_BEFORE", before)
    export(tmp_path / "runs", tmp_path / "out")
    section = render(tmp_path / "out", tmp_path / "img")
    assert "| centralized | healthnews | heterogeneous | 0.3 |" in section
    assert "+0.00 ± 0.00 | not separated |" in section  # the control did not move
    assert (
        "| ilora | healthnews | heterogeneous | 0.3 | 21.0 ± 12.7 | 25.5 ± 6.4 | +4.50" in section
    )
    assert "| fedit |" not in section  # a method the re-run did not cover
