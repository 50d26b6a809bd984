"""Name registries: the one place every algorithm, task and partitioner name is defined.

A registry maps a name to an object (a class or a function). ``register(name)`` is a decorator;
registering a name twice raises, and looking up an unknown name raises with a suggestion, so a
typo in a config never silently runs something else (PEFT's ``register_peft_method`` idea).
``register_lazy(name, "package.module:attr")`` registers a name whose object is imported only on
its first ``get``, so a module costs nothing until it is used (the algorithm and task modules
import torch and ``transformers`` only inside the functions that need them, so even a lookup
loads neither); if that module then ``register``s the name itself (with a preset), it must be
the object the table named. The lazy table is permanent and the imported objects only a cache
of it, so a name stays listed and can be loaded again whatever replaced the cache (a module
imported afresh registers its class again).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Generic
from typing import TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not in a registry (the message carries a did-you-mean suggestion)."""


class Registry(Generic[T]):
    """A named collection of objects of one kind (``algorithm``, ``task``, ``partitioner``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._presets: dict[str, dict[str, Any]] = {}
        self._lazy: dict[str, str] = {}  # name -> "package.module:attr", imported on first get

    def register(self, name: str, preset: Mapping[str, Any] | None = None) -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name``.

        ``preset`` registers a named setting of the same object: its creators
        (``create_algorithm``) pass these keyword defaults (``ilora-s`` is ``ilora`` with
        ``control_variates=True``).

        Raises:
            ValueError: if ``name`` is already registered.

        """

        def decorate(obj: T) -> T:
            if name in self._lazy:  # the module of a lazily registered name is being imported
                self._check_target(name, obj)
            else:
                self._check_new(name)
            self._store(name, obj, preset)
            return obj

        return decorate

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``name`` as ``target`` (``"package.module:attr"``), imported on first ``get``.

        Raises:
            ValueError: if ``name`` is already registered or ``target`` has no ``:attr``.

        """
        self._check_new(name)
        if not target.partition(":")[2]:
            raise ValueError(f"{self.kind} {name!r}: target {target!r} is not 'module:attr'")
        self._lazy[name] = target

    def _check_target(self, name: str, obj: T) -> None:
        """Raise if ``obj`` is not the ``module:attr`` that ``name`` was lazily registered as."""
        where = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"
        if where != self._lazy[name]:
            raise ValueError(
                f"{self.kind} {name!r} is registered as {self._lazy[name]!r} but {where!r} "
                "registers it; fix the name table"
            )

    def _check_new(self, name: str) -> None:
        if name in self:
            raise ValueError(f"there is already a {self.kind} called {name!r}")

    def _store(self, name: str, obj: T, preset: Mapping[str, Any] | None) -> None:
        self._items[name] = obj
        self._presets[name] = dict(preset or {})
        if isinstance(obj, type) and "name" not in obj.__dict__:
            obj.name = name  # type: ignore[attr-defined]

    def _load(self, name: str) -> None:
        """Import a lazily registered ``name`` and cache its object."""
        module, _, attr = self._lazy[name].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        if name not in self._items:  # not registered by the module itself (``register``)
            self._store(name, obj, None)

    def preset(self, name: str) -> dict[str, Any]:
        """Return the keyword defaults registered with ``name`` (empty for a plain entry)."""
        self.get(name)
        return dict(self._presets[name])

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises:
            UnknownNameError: naming the closest registered names.

        """
        if name not in self._items and name in self._lazy:
            self._load(name)
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(self.names())
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {known}; "
                f"`ilora list {self.kind}s` prints them)"
            ) from None

    def names(self) -> list[str]:
        """Return every registered name (lazy ones included, nothing imported), sorted."""
        return sorted({*self._items, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy


def instantiate(cls: type[Any], kwargs: Mapping[str, Any], label: str) -> Any:
    """Return ``cls(**kwargs)`` after checking every key against the dataclass fields of ``cls``.

    Raises:
        ValueError: naming ``label``, the unknown key, a did-you-mean and the valid keys.

    """
    valid: set[str] = (
        {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    )
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{label} has no option {key!r}{hint} (valid: {', '.join(sorted(valid)) or 'none'})"
            )
    return cls(**kwargs)
