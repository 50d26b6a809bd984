"""Regenerate the registry tables in README.md: `make readme` (runs this script).

The algorithm and task tables are rendered from the registries, so a registered name can never
be missing from the README; the defaults table lists, per algorithm, the hyperparameters whose
default is not the paper's (metadata "source": code or ours). tests/test_readme.py fails when
the README is stale.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import ilora.algorithms  # noqa: F401
import ilora.tasks  # noqa: F401
from ilora.algorithms.base import ALGORITHMS
from ilora.tasks.base import TASKS

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_line(obj: object) -> str:
    module = sys.modules[obj.__module__]  # type: ignore[attr-defined]
    doc = (module.__doc__ or obj.__doc__ or "").strip().splitlines()
    return doc[0].rstrip(".") if doc else ""


def algorithms_table() -> str:
    rows = ["| name | what it is | mixed ranks | client state |", "|---|---|---|---|"]
    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name)
        preset = ALGORITHMS.preset(name)
        what = _first_line(cls) + (f" (preset: {preset})" if preset else "")
        yes = {True: "yes", False: "no"}
        rows.append(
            f"| `{name}` | {what} | {yes[cls.heterogeneous_ranks]} | {yes[cls.stateful_clients]} |"
        )
    return "\n".join(rows)


def _departures(name: str, source: str) -> str:
    cls, preset = ALGORITHMS.get(name), ALGORITHMS.preset(name)
    shown = [
        f"`{f.name}: {preset.get(f.name, f.default)!r}`"
        for f in dataclasses.fields(cls)
        if f.init and f.metadata["source"] == source
    ]
    return ", ".join(shown) or "-"


def defaults_table() -> str:
    """Per method, the hyperparameters whose default is the released code's or ours."""
    rows = ["| name | from the released code | ours |", "|---|---|---|"]
    for name in ALGORITHMS.names():
        rows.append(f"| `{name}` | {_departures(name, 'code')} | {_departures(name, 'ours')} |")
    return "\n".join(rows)


def tasks_table() -> str:
    rows = ["| name | what it is |", "|---|---|"]
    for name in TASKS.names():
        cls = TASKS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append(f"| `{name}` | {doc[0].rstrip('.') if doc else ''} |")
    return "\n".join(rows)


def render(text: str) -> str:
    tables = {
        "algorithms": algorithms_table(),
        "defaults": defaults_table(),
        "tasks": tasks_table(),
    }
    for marker, table in tables.items():
        pattern = re.compile(rf"(<!-- {marker}:begin -->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README.md lacks the <!-- {marker}:begin/end --> markers")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
    print(f"updated {README}")
