"""The README's "Bring your own data" commands run as written (on the shipped example files).

Each ``ilora`` line of the README block is run in-process from the repository root; runs go to
a temporary directory and are shortened to one round of one step (the files are the README's).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ilora.cli import app

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- byod:begin -->\n```bash\n(.*?)```\n<!-- byod:end -->", re.S)
SHORT = ["--set", "fed.rounds=1", "--set", "train.steps=1"]


def _commands() -> list[list[str]]:
    block = BLOCK.search((ROOT / "README.md").read_text())
    assert block is not None, "README has no byod block"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines()]


@pytest.mark.assets
def test_readme_bring_your_own_data_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    outputs = []
    for argv in _commands():
        if argv[0] == ".venv/bin/python":
            subprocess.run([sys.executable, *argv[1:]], check=True, cwd=ROOT, timeout=120)
            continue
        assert argv[0] == ".venv/bin/ilora", argv
        args = argv[1:]
        if args[0] == "run":
            out = args.index("--out") + 1
            args[out] = str(tmp_path / Path(args[out]).name)
            args += SHORT
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (argv, result.output)
        outputs.append(result.output)
    assert "split_column (str, default '')" in outputs[0]
    assert outputs[1] == "examples/byod/reviews.yaml: ok\n"
    labels = json.loads((tmp_path / "byod-text" / "labels.json").read_text())
    assert labels["id2label"] == {"0": "negative", "1": "positive"}
    images = json.loads((tmp_path / "byod-images" / "labels.json").read_text())
    assert images["id2label"]["3"] == "grey"
