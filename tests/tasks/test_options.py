"""``tasks.options``: the one check of a task option's type and range, and its one-line message."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from dataclasses import fields
from typing import ClassVar

import pytest

from ilora.tasks.options import bounded
from ilora.tasks.options import check_bool
from ilora.tasks.options import check_bounds
from ilora.tasks.options import check_range


@dataclass(frozen=True)
class Demo:
    name: ClassVar[str] = "demo"
    value: object = 0


def _error(value: object, lo: float, hi: float | None) -> str:
    """Return the message ``check_range`` raises for ``value``, or "" when it accepts it."""
    try:
        check_range(Demo(value), "value", lo, hi)
    except ValueError as err:
        return str(err)
    return ""


@pytest.mark.parametrize(
    ("value", "lo", "hi", "message"),
    [
        (7, 8, 64, "demo: task_args.value=7 is out of range: allowed 8..64"),
        (65, 8, 64, "demo: task_args.value=65 is out of range: allowed 8..64"),
        (8.0, 8, 64, "demo: task_args.value=8.0 is not an integer: allowed 8..64"),
        ("8", 8, 64, "demo: task_args.value='8' is not an integer: allowed 8..64"),
        (True, 0, 64, "demo: task_args.value=True is not an integer: allowed 0..64"),
        (True, 0.0, 2.0, "demo: task_args.value=True is not a number: allowed 0.0..2.0"),
        ("1", 0.0, 2.0, "demo: task_args.value='1' is not a number: allowed 0.0..2.0"),
        (-0.5, 0.0, 2.0, "demo: task_args.value=-0.5 is out of range: allowed 0.0..2.0"),
        (math.nan, 0.0, 2.0, "demo: task_args.value=nan is out of range: allowed 0.0..2.0"),
        (-1, 0, None, "demo: task_args.value=-1 is out of range: allowed >= 0"),
        (None, 0, None, "demo: task_args.value=None is not an integer: allowed >= 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_task_option_value_and_range(
    value: object, lo: float, hi: float | None, message: str
) -> None:
    assert _error(value, lo, hi) == message


@pytest.mark.parametrize(
    ("value", "lo", "hi"),
    [
        (8, 8, 64),  # both bounds are allowed
        (64, 8, 64),
        (2, 0.0, 2.0),  # an int is a number
        (1.5, 0.0, 2.0),
        (10**30, 0, None),  # no cap
        (math.inf, 0.0, None),
    ],
)
def test_a_value_in_range_passes(value: object, lo: float, hi: float | None) -> None:
    assert _error(value, lo, hi) == ""


def test_check_bool_takes_only_a_bool() -> None:
    check_bool(Demo(True), "value")
    check_bool(Demo(False), "value")
    message = "demo: task_args.value=1 is not a bool: allowed true or false"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_bool(Demo(1), "value")


@dataclass(frozen=True)
class Bounded:
    name: ClassVar[str] = "bounded"
    size: int = bounded(8, "side in pixels", 8, 64)
    seed: int = bounded(0, "seed", 0)
    scale: float = bounded(1.0, "scale", 0.0, 2.0)
    free: int = -1  # not bounded: never checked

    def __post_init__(self) -> None:
        check_bounds(self)


def test_a_bounded_option_states_its_range_in_its_help() -> None:
    helps = {f.name: f.metadata.get("help") for f in fields(Bounded)}
    assert helps == {
        "size": "side in pixels (8..64)",
        "seed": "seed (>= 0)",
        "scale": "scale (0.0..2.0)",
        "free": None,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"size": 65}, "bounded: task_args.size=65 is out of range: allowed 8..64"),
        ({"seed": -1}, "bounded: task_args.seed=-1 is out of range: allowed >= 0"),
        ({"scale": "1"}, "bounded: task_args.scale='1' is not a number: allowed 0.0..2.0"),
        ({"size": 4, "seed": -1}, "task_args.size=4 is out of range"),  # the first in field order
    ],
)
def test_check_bounds_checks_every_bounded_option(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Bounded(**args)  # type: ignore[arg-type]


def test_check_bounds_passes_values_in_range_and_leaves_other_options_alone() -> None:
    assert Bounded(size=64, seed=10**30, scale=2, free=-5).free == -5
