"""What the ``ilora bench`` tests share: one quick bench run, CSV rows, the quick protocol.

Not a ``conftest.py``: a second one outside a package would replace ``tests/conftest.py`` as the
module ``conftest`` that other test directories import helpers from.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ilora.bench.protocol import Protocol
from ilora.bench.protocol import parse_variants
from ilora.cli import app

ROOT = Path(__file__).parents[2]


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


def quick_protocol(tmp_path: Path) -> Protocol:
    """The quick protocol on tiny-text (fedit and centralized), its runs under ``tmp_path``."""
    return Protocol(
        tasks=("tiny-text",),
        variants=parse_variants("fedit"),
        preset_dir=ROOT / "configs" / "protocol-quick",
        runs=tmp_path / "runs",
        tuned_dir=tmp_path / "tuned",
        ranks=("heterogeneous",),
        alphas=(0.5,),
        seeds=(0, 1),
        n_rates=2,
        low_rate=3e-3,
        max_rounds=7,
    )
