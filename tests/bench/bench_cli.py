"""What the ``ilora bench`` CLI tests share: one quick bench run into a temp dir, CSV rows.

Not a ``conftest.py``: a second one outside a package would replace ``tests/conftest.py`` as the
module ``conftest`` that other test directories import helpers from.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ilora.cli import app


def quick_bench(tmp_path_factory: pytest.TempPathFactory, name: str, *args: str) -> Path:
    """Run ``ilora bench <name> --quick <args> --out <a new temp dir>``; return that dir."""
    out = tmp_path_factory.mktemp(name)
    result = CliRunner().invoke(app, ["bench", name, "--quick", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def rows(path: Path) -> list[dict[str, str]]:
    """Return the rows of a CSV with a header row."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
