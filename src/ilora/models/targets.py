"""LoRA targets of Hugging Face encoders, named as PEFT's ``target_modules`` names them.

A name selects every module whose full name is that name or ends with ``.<name>`` (PEFT's rule
for a list of names); :func:`name_patterns` turns names into the regexes ``inject`` matches.
Without names, :func:`default_target_modules` picks the query and value projections by the
model directory's ``config.json`` ``model_type`` (the choices of PEFT's defaults). Reading
``config.json`` needs no transformers import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["TARGET_MODULES", "default_target_modules", "name_patterns"]

_QV = ("query", "value")
TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "bert": _QV,
    "roberta": _QV,
    "xlm-roberta": _QV,
    "camembert": _QV,
    "electra": _QV,
    "albert": _QV,
    "deberta": ("in_proj",),
    "deberta-v2": ("query_proj", "value_proj"),
    "distilbert": ("q_lin", "v_lin"),
    "mpnet": ("q", "v"),
}
"""Query/value projection names per ``model_type``."""


def name_patterns(names: Iterable[str]) -> tuple[str, ...]:
    """Return regexes matching a module named ``name`` or ``<anything>.<name>``."""
    return tuple(rf"(?:^|\.){re.escape(name)}$" for name in names)


def default_target_modules(model_dir: Path) -> tuple[str, ...]:
    """Return the query/value projection names of the encoder in ``model_dir``.

    Raises:
        ValueError: if ``config.json`` is missing or its ``model_type`` has no default.

    """
    config = model_dir / "config.json"
    try:
        model_type = str(json.loads(config.read_text()).get("model_type", ""))
    except (OSError, ValueError):
        raise ValueError(f"{config} is missing or not JSON; is {model_dir} a model dir?") from None
    if model_type not in TARGET_MODULES:
        raise ValueError(
            f"model_type {model_type!r} of {model_dir} has no default LoRA targets; set "
            "task_args.target_modules to its attention projections' names (e.g. [q_proj, v_proj])"
        )
    return TARGET_MODULES[model_type]
