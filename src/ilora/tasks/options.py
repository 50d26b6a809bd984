"""The checks of a task's options (``task_args``), one message format for every task.

Each check reads the option from the task itself, so the message always names the option that
was checked: ``"<task>: task_args.<option>=<value> is <problem>: allowed <range>"``, e.g.
``"fashion-mnist: task_args.image_size=7 is out of range: allowed 32..64"``. An option whose
range is fixed is declared with :func:`bounded`: its help states the range and
:func:`check_bounds` checks it, so the range is written once.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar
from typing import Protocol
from typing import TypeVar

T = TypeVar("T")


class NamedTask(Protocol):
    """Anything with a task ``name`` (every registered task class sets one)."""

    @property
    def name(self) -> str: ...


class OptionsTask(NamedTask, Protocol):
    """A task that is a dataclass (its options are its fields)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


def allowed_range(lo: float, hi: float | None) -> str:
    """Return ``"lo..hi"``, or ``">= lo"`` without a cap: how help and errors state a range."""
    return f">= {lo}" if hi is None else f"{lo}..{hi}"


def bounded(default: T, help: str, lo: float, hi: float | None = None) -> T:
    """Return a task option (dataclass field) that must lie in ``[lo, hi]`` (``hi=None``: no cap).

    Its help is ``help`` followed by the range, e.g. ``"number of classes (2..16)"``;
    :func:`check_bounds` checks the value with :func:`check_range`.
    """
    metadata = {"help": f"{help} ({allowed_range(lo, hi)})", "bounds": (lo, hi)}
    return dataclasses.field(default=default, metadata=metadata)


def check_bounds(task: OptionsTask) -> None:
    """Check every option of ``task`` declared with :func:`bounded`, in field order.

    Raises:
        ValueError: from :func:`check_range`, for the first option out of its range.

    """
    for option in dataclasses.fields(task):
        if "bounds" in option.metadata:
            check_range(task, option.name, *option.metadata["bounds"])


def option_error(task: NamedTask, option: str, problem: str, allowed: str) -> ValueError:
    """Return the error for a bad ``task_args.<option>``: task, option, value, what is allowed.

    Args:
        task: the task whose option is bad.
        option: the option's field name.
        problem: what is wrong, e.g. ``"out of range"``.
        allowed: what the option accepts, e.g. ``"8..64"``.

    """
    value = getattr(task, option)
    return ValueError(f"{task.name}: task_args.{option}={value!r} is {problem}: allowed {allowed}")


def check_range(task: NamedTask, option: str, lo: float, hi: float | None = None) -> None:
    """Check that ``task.<option>`` is a number in ``[lo, hi]`` (``hi=None``: no cap).

    The option must be an ``int`` when ``lo`` is one, else an ``int`` or a ``float``; a
    ``bool`` is never a number here, and NaN is never in range.

    Raises:
        ValueError: from :func:`option_error`, naming the task, option, value and range.

    """
    value = getattr(task, option)
    allowed = allowed_range(lo, hi)
    kind, what = (int, "an integer") if isinstance(lo, int) else ((int, float), "a number")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise option_error(task, option, f"not {what}", allowed)
    if not (lo <= value and (hi is None or value <= hi)):  # NaN compares False: rejected
        raise option_error(task, option, "out of range", allowed)


def check_bool(task: NamedTask, option: str) -> None:
    """Check that ``task.<option>`` is a ``bool``.

    Raises:
        ValueError: from :func:`option_error`, naming the task, option and value.

    """
    if not isinstance(getattr(task, option), bool):
        raise option_error(task, option, "not a bool", "true or false")
