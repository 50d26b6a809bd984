"""The score-window study: tune.csv's longer windows re-score each run; the rule still chooses."""

from __future__ import annotations

import json
from pathlib import Path

from ilora.bench import protocol_results
from ilora.bench.resultfiles import read_rows
from ilora.bench.resultfiles import write_rows
from ilora.report import _score_window

# validation accuracy % per evaluation; rate 0.001 is steady, 0.01 swings and ends lucky
CURVES = {
    0.001: [70, 72, 74, 75, 75, 75, 75, 75, 75, 75, 75, 75],
    0.01: [60, 80, 40, 80, 40, 80, 40, 80, 50, 76, 77, 78],
}


def _run(runs: Path, task: str, variant: str, rate: float, curve: list[float]) -> None:
    """Write a finished tuning run's history (and summary) as the protocol lays them out."""
    run = runs / task / "tune" / variant / f"lr{rate:g}"
    run.mkdir(parents=True)
    lines = [{"round": 3 * (i + 1), "accuracy": a / 100} for i, a in enumerate(curve)]
    lines.insert(0, {"round": 1, "train_loss": 0.7})  # a round without an evaluation
    (run / "history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "summary.json").write_text("{}")


def _mean_last(curve: list[float], w: int) -> float:
    return sum(curve[-w:]) / w


def test_tune_rows_score_and_choose_each_longer_window_beside_the_rule(tmp_path: Path) -> None:
    for rate, curve in CURVES.items():
        _run(tmp_path, "t", "fedit", rate, curve)
    rows = {r["lr"]: r for r in protocol_results.tune_rows(tmp_path)}
    for w, suffix in ((3, ""), (5, "_last5"), (10, "_last10")):
        means = {rate: _mean_last(curve, w) for rate, curve in CURVES.items()}
        best = max(means, key=lambda rate: means[rate])
        for rate, row in rows.items():
            assert row[f"val_score{suffix}"] == round(means[rate], 4)
            assert row[f"chosen{suffix}"] == int(rate == best)
    chosen = [max(rows, key=lambda r: rows[r][f"chosen{s}"]) for s in ("", "_last5", "_last10")]
    assert chosen == [0.01, 0.001, 0.001]  # the swinging rate wins only on its last three


def test_the_section_marks_moved_choices_and_names_tasks_without_the_columns(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    for rate, curve in CURVES.items():
        _run(runs, "kept", "fedit", rate, curve)
        _run(runs, "kept", "ilora", rate, [80.0] * 12 if rate == 0.01 else curve)
    rows = protocol_results.tune_rows(runs)
    old = {"task": "old", "variant": "fedit", "lr": 0.001, "metric": "accuracy"}
    old |= {"val_score": 70.0, "chosen": 1, "failed": 0, "finished": 1}
    write_rows(tmp_path / "tune.csv", [{**old}])  # a file written before the longer windows
    merged = protocol_results.resultfiles.merge_rows(tmp_path / "tune.csv", rows, ("task",))
    write_rows(tmp_path / "tune.csv", merged)
    text = _score_window.render(read_rows(tmp_path / "tune.csv"), rule=3)
    lines = text.splitlines()
    fedit = next(line for line in lines if line.startswith("| fedit "))
    assert fedit == "| fedit | 0.01 (77.0) | 0.001 (75.0) ◆ | 0.001 (74.9) ◆ |"  # (74 + 9·75)/10
    ilora = next(line for line in lines if line.startswith("| ilora "))
    assert ilora == "| ilora | 0.01 (80.0) | 0.01 (80.0) | 0.01 (80.0) |"
    assert "Methods whose choice moves: 1 of 2 with the last 5, 1 of 2 with the last 10." in text
    assert "| method | last 3 (the rule) | last 5 | last 10 |" in text
    assert "Not recomputable: old (" in text and "**old**" not in text


def test_a_file_without_the_longer_windows_has_no_section() -> None:
    row = {"task": "t", "variant": "fedit", "lr": "0.001", "val_score": "70", "chosen": "1"}
    assert _score_window.render([row], rule=3) == ""
