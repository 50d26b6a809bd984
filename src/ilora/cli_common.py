"""What every ``ilora`` command shares: the console, the user errors, failing, list options.

One console for all commands: outside a terminal (a log file, CI, ``nohup``) it never
hard-wraps a line, so a message stays one line however long. :func:`fail` always escapes rich
markup, so a message holding ``ilora[mlflow]`` prints its brackets.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ilora.assets import AssetMissingError
from ilora.config import ConfigError
from ilora.registry import UnknownNameError

T = TypeVar("T")

__all__ = ["USER_ERRORS", "console", "fail", "split_floats", "split_ints", "split_names"]

console = Console(soft_wrap=not sys.stdout.isatty())
"""The commands' console: soft-wrapped (no inserted line breaks) unless stdout is a terminal."""

USER_ERRORS = (ConfigError, UnknownNameError, AssetMissingError, OSError, ValueError)
"""Errors a user can cause: printed as one line with exit code 2, never as a traceback."""


def fail(err: Exception | str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` (markup escaped) and exit with ``code``."""
    console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(code=code)


def split_names(text: str) -> list[str]:
    """Parse ``"a, b,c"`` into ``["a", "b", "c"]`` (empty items dropped)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def split_ints(text: str, option: str) -> list[int]:
    """Parse ``"0,1,2"`` into integers (``ConfigError`` naming ``option`` if one is not)."""
    return _split_numbers(text, option, int, "integers")


def split_floats(text: str, option: str) -> list[float]:
    """Parse ``"0.1,0.5"`` into floats (``ConfigError`` naming ``option`` if one is not)."""
    return _split_numbers(text, option, float, "numbers")


def _split_numbers(text: str, option: str, kind: Callable[[str], T], what: str) -> list[T]:
    try:
        return [kind(x) for x in split_names(text)]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated {what}, got {text!r}") from None
