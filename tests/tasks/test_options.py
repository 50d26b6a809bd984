"""``tasks.options``: the one check of a task option's type and range, and its one-line message."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

import pytest

from ilora.tasks.options import check_bool
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
