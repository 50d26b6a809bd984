"""``ilora describe``: every option of a task or an algorithm, read from its dataclass.

The fields a config is validated against (``task_args``, ``algorithm_args``) are the fields
listed here, with their type, default (after the registered preset) and help string, so the
description cannot drift from what the config accepts.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from typing import Any
from typing import Literal

__all__ = ["Option", "describe_algorithm", "describe_task", "options", "render"]


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its name, type, default (``None`` when required), help and source.

    ``source`` says where the default comes from (``ilora.algorithms.base.SOURCES``: paper,
    code, ours, engine); ``None`` for options that record none (tasks).
    """

    name: str
    type: str
    default: str | None
    help: str
    source: str | None = None


def type_name(tp: Any) -> str:
    """Return a short readable name of an annotation (``int``, ``a | b``, ``list of str``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict or tp is dict:
        return "mapping"
    if args:
        return " | ".join(type_name(a) for a in args)
    return str(getattr(tp, "__name__", tp))


def _default(field: dataclasses.Field[Any], preset: Mapping[str, Any]) -> str | None:
    if field.name in preset:
        value = preset[field.name]
    elif field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return None
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def options(cls: type[Any], preset: Mapping[str, Any] | None = None) -> list[Option]:
    """Return the options (init fields) of dataclass ``cls``, ``preset`` applied to defaults."""
    hints = typing.get_type_hints(cls)
    return [
        Option(
            f.name,
            type_name(hints[f.name]),
            _default(f, preset or {}),
            f.metadata["help"],
            f.metadata.get("source"),
        )
        for f in dataclasses.fields(cls)
        if f.init
    ]


def _summary(cls: type[Any]) -> str:
    """Return the first paragraph of the class docstring (the module's, if it points there)."""
    doc = inspect.getdoc(cls) or ""
    if "module docstring" in doc.split("\n\n", 1)[0]:
        doc = inspect.getdoc(inspect.getmodule(cls)) or doc
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def render(
    title: str,
    summary: str,
    section: str,
    opts: list[Option],
    legend: Mapping[str, str] | None = None,
) -> str:
    """Return the plain-text description: a title line, then one line per option.

    An option with a source shows it after its default (``default 1e-4, source code``);
    ``legend`` (source: meaning) is listed after the options when any option has a source.
    """
    lines = [f"{title}: {summary}", f"options ({section}):" if opts else f"no options ({section})"]
    for opt in opts:
        default = "required" if opt.default is None else f"default {opt.default}"
        source = "" if opt.source is None else f", source {opt.source}"
        lines.append(f"  {opt.name} ({opt.type}, {default}{source}): {opt.help}")
    if legend and any(opt.source is not None for opt in opts):
        lines.append("sources: " + "; ".join(f"{k} = {v}" for k, v in legend.items()))
    return "\n".join(lines)


def describe_task(name: str) -> str:
    """Return the description of task ``name`` (its ``task_args``).

    Raises:
        UnknownNameError: for an unknown name (with a did-you-mean).

    """
    import ilora.tasks  # noqa: F401  (registers the task names)
    from ilora.tasks.base import TASKS

    cls = TASKS.get(name)
    return render(f"task {name}", _summary(cls), "task_args", options(cls))


def describe_algorithm(name: str) -> str:
    """Return the description of algorithm ``name`` (its ``algorithm_args``).

    Raises:
        UnknownNameError: for an unknown name (with a did-you-mean).

    """
    import ilora.algorithms  # noqa: F401  (registers the algorithms)
    from ilora.algorithms.base import ALGORITHMS
    from ilora.algorithms.base import SOURCES

    cls = ALGORITHMS.get(name)
    opts = options(cls, ALGORITHMS.preset(name))
    section = f"algorithm_args, or per_algorithm.{name}"
    return render(f"algorithm {name}", _summary(cls), section, opts, SOURCES)
