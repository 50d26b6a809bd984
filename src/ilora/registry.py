"""Name registries: the one place every algorithm, task and partitioner name is defined.

A registry maps a name to an object (a class or a function). ``register(name)`` is a decorator;
registering a name twice raises, and looking up an unknown name raises with a suggestion, so a
typo in a config never silently runs something else (PEFT's ``register_peft_method`` idea).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry (the message carries a did-you-mean suggestion)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of objects of one kind (``algorithm``, ``task``, ``partitioner``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name``.

        Raises:
            ValueError: if ``name`` is already registered.
        """

        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"there is already a {self.kind} called {name!r}")
            self._items[name] = obj
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises:
            UnknownNameError: naming the closest registered names.
        """
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(self.names())
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {known}; "
                f"`ilora list {self.kind}s` prints them)"
            ) from None

    def names(self) -> list[str]:
        """Return every registered name, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
