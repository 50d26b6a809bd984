"""Every hyperparameter of every registered algorithm says where its default comes from.

The house rule (the paper's reading is the default; our choices are documented as ours) as a
contract over the registry: each dataclass field carries ``metadata["source"]``, one of
``base.SOURCES``, and a field whose default is ours explains itself in its help. A new
algorithm inherits the rule by being registered.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from dataclasses import field

import pytest

from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import SOURCES

MIN_OURS_WORDS = 10  # "ours" alone, or "ours: better", does not tell a user why


def source_problems(cls: type) -> list[str]:
    """Return one line per field of ``cls`` that breaks the rule (empty: it holds)."""
    problems = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        source, help_text = f.metadata.get("source"), str(f.metadata.get("help", ""))
        if source not in SOURCES:
            problems.append(f"{f.name}: source {source!r} is not one of {sorted(SOURCES)}")
        elif source == "ours":
            words = len(help_text.split())
            if words < MIN_OURS_WORDS or not re.search(r"\bours\b", help_text):
                problems.append(f"{f.name}: a default that is ours needs a help that says why")
    return problems


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_hyperparameter_records_where_its_default_comes_from(name: str) -> None:
    assert source_problems(ALGORITHMS.get(name)) == []


def test_the_rule_catches_a_missing_source_and_an_unexplained_choice() -> None:
    @dataclass(frozen=True)
    class Careless:
        a: int = field(default=1, metadata={"help": "a"})
        b: int = field(default=2, metadata={"help": "b", "source": "folklore"})
        c: int = field(default=3, metadata={"help": "ours: better", "source": "ours"})
        d: int = field(
            default=4,
            metadata={"help": "a long help that never says whose choice it is", "source": "ours"},
        )
        e: int = field(default=5, metadata={"help": "the paper's value", "source": "paper"})
        f: int = field(
            default=6,
            metadata={
                "help": "ours: the paper gives no value, and 6 keeps every client training",
                "source": "ours",
            },
        )

    problems = source_problems(Careless)
    assert [p.split(":")[0] for p in problems] == ["a", "b", "c", "d"]
    assert "'folklore' is not one of" in problems[1]
