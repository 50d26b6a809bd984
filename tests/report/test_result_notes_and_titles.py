"""Sections that reuse a renderer or carry notes: titles and notes come from the files."""

from __future__ import annotations

import shutil
from pathlib import Path

from ilora.report import faults_control
from ilora.report import faults_control_median

RESULTS = Path(__file__).resolve().parents[2] / "results" / "faults_control_median"


def test_the_section_is_the_target_table_of_its_runs_under_its_title(tmp_path: Path) -> None:
    src = tmp_path / "faults_control_median"
    shutil.copytree(RESULTS, src)
    section = faults_control_median.render(src, tmp_path / "img")
    plain = faults_control.render(src, tmp_path / "img")
    assert section.startswith(faults_control_median.TITLE + "\n")
    assert section.split("\n", 1)[1] == plain.split("\n", 1)[1]
    assert "robust_products=median" in section  # the command that made the runs
    assert "| ilora | not a mean |" in section


def test_the_quality_grid_prints_the_notes_of_its_meta(tmp_path: Path) -> None:
    import json

    from ilora.report import quality

    src = tmp_path / "quality"
    shutil.copytree(RESULTS.parent / "quality", src)
    meta = json.loads((src / "meta.json").read_text())
    meta["notes"] = ["A labelled sensitivity study."]
    (src / "meta.json").write_text(json.dumps(meta))
    assert "\nA labelled sensitivity study.\n" in quality.render(src, tmp_path / "img")
