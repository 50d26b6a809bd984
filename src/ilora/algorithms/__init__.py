"""The federated LoRA methods, one module each: a new algorithm is one new file.

Importing this package registers every algorithm name that :mod:`.catalog` reads from the
modules' ``@register`` decorators, without importing a method's module (nor torch): a module is
imported when its name is first looked up (``ALGORITHMS.get``). :func:`import_modules` imports
them all at once. Helper modules start with ``_``; ``__all__`` lists the other modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from ilora.algorithms.catalog import ALGORITHMS as ALGORITHMS  # names registered on import
from ilora.algorithms.catalog import module_names


def import_modules(package: str, paths: Iterable[str]) -> list[str]:
    """Import every non-underscore module of ``package`` found on ``paths``; return their names.

    Sorted by name, so registration order (and any error it raises) is the same on every run.
    """
    names = module_names(paths)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


__all__ = module_names(__path__)
