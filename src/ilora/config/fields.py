"""``option``: a documented dataclass field, the one way config sections and tasks declare one."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")


def option(default: T, help: str) -> T:
    """Return a dataclass field with ``default`` and its ``help`` (``metadata["help"]``).

    The help is what ``ilora describe``, the CLI and the README tables print for the option.
    """
    return dataclasses.field(default=default, metadata={"help": help})
