"""Contract over every registered task: each option declared with ``bounded`` is checked.

A task that declares a range but forgets ``check_bounds`` in ``__post_init__`` would state the
range in its help and accept anything; this test builds every registered task with each bounded
option just outside its range and expects the one-line refusal naming it.
"""

from __future__ import annotations

import dataclasses

import pytest

from ilora.tasks import TASKS


def _outside(lo: float, hi: float | None) -> list[float]:
    below = lo - 1 if isinstance(lo, int) else lo - 0.5
    return [below] if hi is None else [below, hi + 1 if isinstance(hi, int) else hi + 0.5]


CASES = [
    (name, f.name, bad)
    for name in TASKS.names()
    for f in dataclasses.fields(TASKS.get(name))
    if "bounds" in f.metadata
    for bad in _outside(*f.metadata["bounds"])
]


def test_every_task_declares_some_bounded_option() -> None:
    assert {name for name, _, _ in CASES} == set(TASKS.names())


def _required(cls: type) -> dict[str, str]:
    """Placeholders for the options without a default (a data file's path): never opened here."""
    missing = dataclasses.MISSING
    return {
        f.name: "data.file"
        for f in dataclasses.fields(cls)
        if f.default is missing and f.default_factory is missing
    }


@pytest.mark.parametrize(("task", "option", "bad"), CASES)
def test_a_bounded_option_out_of_range_is_refused(task: str, option: str, bad: float) -> None:
    cls = TASKS.get(task)
    with pytest.raises(ValueError, match=rf"{task}: task_args\.{option}=.* out of range"):
        cls(**_required(cls), **{option: bad})
