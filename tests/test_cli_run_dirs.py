"""A finished run is never overwritten; default run directories are new; strict JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ilora.bench.rundirs import null_as_nan
from ilora.cli import app
from ilora.engine.history import append_jsonl
from ilora.engine.history import write_json_atomic
from ilora.engine.outputs import RunExistsError
from ilora.engine.outputs import new_run_dir
from ilora.engine.outputs import refuse_existing_run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
FAST = ["--set", "fed.rounds=1", "--set", "train.steps=1"]
runner = CliRunner()


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_run_onto_a_finished_run_refuses_and_leaves_it_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = runner.invoke(app, ["run", str(SMOKE), *FAST, "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = runner.invoke(app, ["run", str(SMOKE), *FAST, "--out", str(out)])
    assert again.exit_code == 2
    text = " ".join(again.output.split())
    assert f"--out {out} already holds a finished run" in text
    assert f"ilora run --resume {out}" in text and "--overwrite" in text
    assert "Traceback" not in again.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    replaced = runner.invoke(app, ["run", str(SMOKE), *FAST, "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


def test_an_unfinished_run_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").write_text("")
    with pytest.raises(RunExistsError, match="already holds an unfinished run"):
        refuse_existing_run(tmp_path)


def test_an_empty_or_unrelated_directory_is_free(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    refuse_existing_run(tmp_path)
    refuse_existing_run(tmp_path / "missing")


def test_default_run_directories_are_new_each_time(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, "ilora-tiny-text-seed0")
    first.mkdir()
    second = new_run_dir(tmp_path, "ilora-tiny-text-seed0")
    assert second != first and not second.exists()
    assert first.name.startswith("ilora-tiny-text-seed0-")


def test_run_without_out_writes_a_new_directory_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = runner.invoke(app, ["run", str(SMOKE), *FAST])
        assert result.exit_code == 0, result.output
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    assert all((r / "summary.json").is_file() for r in runs)


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    record = {"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}}
    write_json_atomic(tmp_path / "s.json", record)
    expected = {"a": None, "b": [None, 1.0], "c": {"d": None}}
    assert _strict((tmp_path / "s.json").read_text()) == expected
    append_jsonl(tmp_path / "h.jsonl", {"round": 1, "loss": math.nan})
    line = (tmp_path / "h.jsonl").read_text().splitlines()[0]
    assert _strict(line) == {"round": 1, "loss": None}
    assert math.isnan(null_as_nan({"loss": None})["loss"])
