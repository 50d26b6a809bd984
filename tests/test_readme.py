import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import readme_tables  # noqa: E402


def test_readme_tables_list_every_registered_name() -> None:
    text = (ROOT / "README.md").read_text()
    assert readme_tables.render(text) == text, "run: make readme"
