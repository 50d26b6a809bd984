"""Facts the report states, read from the classes they belong to (``ast``: nothing imported).

A task's or an algorithm's defaults and descriptions live in its source; the renderers read
them from there instead of restating them, so the text follows the code. Parsing (as
``algorithms.catalog`` does) keeps ``ilora report`` free of torch: no training code is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1]  # the ilora package
DEFAULT_FIRST = ("hyperparameter", "option", "bounded")  # field makers: default comes first
SOURCE_WORDS = {"paper": "the paper's", "code": "the released code's", "ours": "our"}


def _tree(module: str) -> ast.Module:
    path = SRC.joinpath(*module.split(".")[1:]).with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"))


def _field_facts(name: str, value: ast.expr) -> dict[str, Any]:
    """Return ``{name: default}`` of a literal, a ``field`` or a maker in ``DEFAULT_FIRST``.

    A field's ``metadata={"source": ...}`` or a hyperparameter's source adds ``{name}_source``;
    anything not literal is left out.
    """
    func = getattr(value, "func", None)
    if isinstance(value, ast.Call) and getattr(func, "id", "") in DEFAULT_FIRST:
        # hyperparameter(default, source, help); option(default, help); bounded(default, help, lo)
        named = (name, f"{name}_source") if getattr(func, "id", "") == "hyperparameter" else (name,)
        parts = dict(zip(named, value.args, strict=False))
        return {k: v for n, e in parts.items() for k, v in _field_facts(n, e).items()}
    if isinstance(value, ast.Call) and getattr(func, "id", "") == "field":
        kw = {k.arg: k.value for k in value.keywords if k.arg}
        out = _field_facts(name, kw["default"]) if "default" in kw else {}
        meta = kw.get("metadata")
        if isinstance(meta, ast.Dict):
            for k, v in zip(meta.keys, meta.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "source":
                    out.update(_field_facts(f"{name}_source", v))
        return out
    try:
        return {name: ast.literal_eval(value)}
    except ValueError:
        return {}


def class_facts(target: str) -> dict[str, Any]:
    """Return the literal class attributes and field defaults of ``"package.module:Class"``.

    Bases imported from ``ilora`` modules are read first, so the class's own values win.
    """
    module, _, name = target.partition(":")
    tree = _tree(module)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    sources = {
        alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    facts: dict[str, Any] = {}
    for base in cls.bases:
        where = sources.get(base.id, module) if isinstance(base, ast.Name) else ""
        if isinstance(base, ast.Name) and where.startswith("ilora."):
            facts.update(class_facts(f"{where}:{base.id}"))
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            facts.update(_field_facts(node.target.id, node.value))
    return facts


def algorithm_facts(name: str) -> dict[str, Any]:
    """Return :func:`class_facts` of the class registered as algorithm ``name``."""
    module = f"ilora.algorithms.{name.replace('-', '_')}"
    for cls in _tree(module).body:
        if isinstance(cls, ast.ClassDef) and any(
            isinstance(d, ast.Call) and d.args and getattr(d.args[0], "value", None) == name
            for d in cls.decorator_list
        ):
            return class_facts(f"{module}:{cls.name}")
    raise LookupError(f"no class registers algorithm {name!r} in {module}")


def task_target(name: str) -> str | None:
    """Return ``"package.module:Class"`` of task ``name`` from ``ilora.tasks``' name table."""
    for node in _tree("ilora.tasks.__init__").body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
            table = ast.literal_eval(node.value)
            if name in table:
                return str(table[name])
    return None


def sci(x: float) -> str:
    """Return ``x`` as short scientific notation (``1e-3``, ``2.5e-4``)."""
    mantissa, exponent = f"{x:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"
