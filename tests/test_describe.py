"""``ilora describe``: every option of every task and algorithm, from the validated dataclasses."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

import ilora.algorithms  # noqa: F401  (registers every algorithm)
import ilora.tasks  # noqa: F401  (registers every task)
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import SOURCES
from ilora.algorithms.base import create_algorithm
from ilora.cli import app
from ilora.describe import options
from ilora.tasks.base import TASKS

runner = CliRunner()


def _describe(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["describe", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_option_is_listed_with_type_default_and_help(name: str) -> None:
    code, text = _describe("task", name)
    assert code == 0, text
    fields = [f for f in dataclasses.fields(TASKS.get(name)) if f.init]
    lines = text.splitlines()
    assert lines[0].startswith(f"task {name}: ")
    assert len(lines) == 2 + len(fields)
    for f, line in zip(fields, lines[2:], strict=True):
        assert line.startswith(f"  {f.name} (") and line.endswith(f"): {f.metadata['help']}")


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_option_shows_the_default_the_config_gets(name: str) -> None:
    code, text = _describe("algorithm", name)
    assert code == 0, text
    algorithm = create_algorithm(name)  # the preset applied, as a config without args gets it
    for opt in options(ALGORITHMS.get(name), ALGORITHMS.preset(name)):
        value = getattr(algorithm, opt.name)
        shown = repr(list(value) if isinstance(value, tuple) else value)
        assert opt.source in SOURCES, (name, opt.name)
        line = f"  {opt.name} ({opt.type}, default {shown}, source {opt.source}): {opt.help}"
        assert line in text


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_option_shows_the_source_of_its_default(name: str) -> None:
    text = _describe("algorithm", name)[1]
    fields = [f for f in dataclasses.fields(ALGORITHMS.get(name)) if f.init]
    for f in fields:
        assert f", source {f.metadata['source']}): " in text, (name, f.name)
    legend = [line for line in text.splitlines() if line.startswith("sources: ")]
    assert len(legend) == (1 if fields else 0)
    if fields:
        assert all(f"{key} = {meaning}" in legend[0] for key, meaning in SOURCES.items())


def test_types_defaults_and_required_options_read_as_written() -> None:
    text = _describe("task", "image-npz")[1]
    assert "  path (str, required): an .npz with" in text
    assert "  class_names (list of str, default [])" in text
    ilora = _describe("algorithm", "ilora")[1]
    assert "  redistribute (qr | svd | qr_literal, default 'qr', source paper)" in ilora
    assert "  offset (shared | per_client, default 'shared', source ours)" in ilora
    assert "  init_rms (float, default 0.0001, source code)" in ilora
    ilora_s = _describe("algorithm", "ilora-s")[1]
    assert "  control_variates (bool, default True, source paper)" in ilora_s
    assert "  dense (bool, default False, source engine)" in _describe("algorithm", "flexlora")[1]
    assert "source" not in _describe("task", "image-npz")[1]  # tasks record no source


def test_unknown_kind_or_name_is_a_clear_error() -> None:
    code, text = _describe("algorithm", "fedti")
    assert code == 2 and "unknown algorithm 'fedti'; did you mean 'fedit'" in text
    code, text = _describe("model", "x")
    assert code == 2 and "unknown kind 'model'; choose one of task, algorithm" in text
