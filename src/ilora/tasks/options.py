"""The checks of a task's options (``task_args``), one message format for every task.

Each check reads the option from the task itself, so the message always names the option that
was checked: ``"<task>: task_args.<option>=<value> is <problem>: allowed <range>"``, e.g.
``"fashion-mnist: task_args.image_size=7 is out of range: allowed 32..64"``.
"""

from __future__ import annotations

from typing import Protocol


class NamedTask(Protocol):
    """Anything with a task ``name`` (every registered task class sets one)."""

    @property
    def name(self) -> str: ...


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
    allowed = f">= {lo}" if hi is None else f"{lo}..{hi}"
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
