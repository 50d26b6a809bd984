"""The algorithm names, found by reading the package's modules, not by importing them.

Every module of this package whose name does not start with ``_`` is parsed (``ast``, no
import): each class decorated with ``@register("name", ...)`` puts ``name`` in ``ALGORITHMS`` as
``"ilora.algorithms.<module>:<Class>"``, imported only when the name is first looked up
(``ALGORITHMS.get``). So a new algorithm is one new file, and listing the names
(``ilora list algorithms``) imports no torch; the module's own ``@register`` then stores the
class (and its preset: ``ilora-s`` is ``ilora`` with ``control_variates=True``), checked against
what was read here.
"""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from ilora.registry import Registry

if TYPE_CHECKING:
    from ilora.algorithms.base import Algorithm

ALGORITHMS: Registry[type[Algorithm[Any]]] = Registry("algorithm")
PACKAGE = __name__.rpartition(".")[0]


def module_names(paths: Iterable[str]) -> list[str]:
    """Return the package's module names that do not start with ``_``, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(list(paths)) if not m.name.startswith("_"))


def discover(paths: Iterable[str]) -> dict[str, str]:
    """Return ``{name: "package.module:Class"}`` of every ``@register("name")`` on ``paths``."""
    paths = list(paths)
    found: dict[str, str] = {}
    for module in module_names(paths):
        source = next(Path(p, f"{module}.py") for p in paths if Path(p, f"{module}.py").is_file())
        for cls in ast.parse(source.read_text(encoding="utf-8")).body:
            if isinstance(cls, ast.ClassDef):
                for name in _registered_names(cls):
                    found[name] = f"{PACKAGE}.{module}:{cls.name}"
    return found


def _registered_names(cls: ast.ClassDef) -> list[str]:
    """Return the names a class registers with ``@register("name", ...)`` decorators."""
    names = []
    for deco in cls.decorator_list:
        if (
            isinstance(deco, ast.Call)
            and isinstance(deco.func, ast.Name)
            and deco.func.id == "register"
            and deco.args
            and isinstance(deco.args[0], ast.Constant)
            and isinstance(deco.args[0].value, str)
        ):
            names.append(deco.args[0].value)
    return names


for _name, _target in discover([str(Path(__file__).parent)]).items():
    ALGORITHMS.register_lazy(_name, _target)
