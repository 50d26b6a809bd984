"""``ilora.report.flower``: medians over repeats, ratios to the embedded engine, the figure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ilora.report.flower import render

FIELDS = ["runtime", "repeat", "round_wall_median_s", "total_wall_s", "peak_rss_mb"]
FIELDS += ["peak_pss_mb", "processes_seen", "final_accuracy"]
# runtime -> per repeat: (s/round, total s, RSS MB, PSS MB, processes)
RUNS = {
    "embedded": [
        (0.5, 20.0, 400.0, 300.0, 1),
        (0.7, 30.0, 420.0, 310.0, 1),
        (0.6, 25.0, 410.0, 305.0, 1),
    ],
    "simulation": [
        (0.4, 80.0, 2000.0, 1500.0, 12),
        (0.6, 90.0, 2100.0, 1600.0, 12),
        (0.5, 70.0, 2050.0, 1550.0, 12),
    ],
    "deployment": [
        (30.0, 200.0, 3000.0, 2000.0, 20),
        (36.0, 210.0, 3100.0, 2100.0, 21),
        (33.0, 190.0, 3280.0, 2200.0, 22),
    ],
}


def _write(src: Path, accuracy: dict[str, str]) -> None:
    src.mkdir()
    with (src / "runs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        for runtime, reps in RUNS.items():
            for rep, values in enumerate(reps):
                writer.writerow([runtime, rep, *values, accuracy.get(runtime, "0.5")])
    (src / "imports.csv").write_text("module,repeat,seconds\nilora.flower.client,0,9.0\n")
    meta = {"command": "python benchmarks/flower_runtimes.py", "workload": "w", "cpus": 2}
    (src / "meta.json").write_text(json.dumps(meta))


def test_section_states_the_median_ratios(tmp_path: Path) -> None:
    _write(tmp_path / "flower", {})
    text = render(tmp_path / "flower", tmp_path / "img")
    assert text.startswith("## ")
    assert "ilora bench flower" in text  # the recorded script, as typed today
    assert (tmp_path / "img" / "flower-runtimes.png").read_bytes().startswith(b"\x89PNG")
    assert "](img/flower-runtimes.png)" in text
    median = {rt: sorted(v[0] for v in reps)[1] for rt, reps in RUNS.items()}
    rss = {rt: sorted(v[2] for v in reps)[1] for rt, reps in RUNS.items()}
    slow = median["deployment"] / median["embedded"]
    assert f"deployment runtime takes {slow:.1f}×" in text
    assert f"{rss['simulation'] / rss['embedded']:.1f}× its peak memory" in text
    assert "same final accuracy (50.00%)" in text
    assert "about 9.0 s importing" in text


def test_section_says_when_accuracies_differ(tmp_path: Path) -> None:
    _write(tmp_path / "flower", {"deployment": "0.25"})
    text = render(tmp_path / "flower", tmp_path / "img")
    assert "final accuracies differ" in text


def test_section_says_whether_the_targets_are_met(tmp_path: Path) -> None:
    _write(tmp_path / "flower", {})
    text = render(tmp_path / "flower", tmp_path / "img")
    deployment = 33.0 / 0.6  # medians of s / round
    simulation = 80.0 / 25.0  # medians of total s
    assert f"deployment's seconds per round: {deployment:.1f}×, misses it" in text
    assert f"simulation's total seconds: {simulation:.1f}×, misses it" in text
    assert "cannot be shorter than about 3.5 s" in text  # 1 message: not recorded
    assert f"Beyond that floor, a round costs {33.0 - 3.5:.2f} s here" in text


def test_the_deployment_floor_counts_the_recorded_messages_per_round(tmp_path: Path) -> None:
    _write(tmp_path / "flower", {})
    meta = json.loads((tmp_path / "flower" / "meta.json").read_text())
    (tmp_path / "flower" / "meta.json").write_text(json.dumps({**meta, "messages_per_round": 2}))
    text = render(tmp_path / "flower", tmp_path / "img")
    floor = 2 * (3.0 + 0.5)  # per message: the SuperNode's 3-s sleep, its 0.5-s reply poll
    want = f"cannot be shorter than about {floor:.1f} s, {floor / 0.6:.1f}× the embedded round"
    assert f"With 2 message(s) per round a deployment round {want}" in text
    assert f"Beyond that floor, a round costs {33.0 - floor:.2f} s here" in text
