"""Import every algorithm module of this package so that its ``@register`` runs; nothing else.

Discovery is automatic: every module here whose name does not start with ``_`` is imported
(``base`` and ``traffic`` register nothing), so a new algorithm is one new file; helper modules
start with ``_``. ``__all__`` lists what was imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_modules(package: str, paths: Iterable[str]) -> list[str]:
    """Import every non-underscore module of ``package`` found on ``paths``; return their names.

    Sorted by name, so registration order (and any error it raises) is the same on every run.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(list(paths)) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


__all__ = import_modules(__name__, __path__)
