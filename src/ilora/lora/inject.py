"""``inject``: wrap the target modules of a model in ``LoRALinear`` and freeze everything else.

Targets are regexes searched in full module names (``re.search``), so patterns survive the module
renames between ``transformers`` versions. The head (regexes over parameter names) stays
trainable and is recorded on the model as ``ilora_head``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from ilora.lora.layer import LoRALinear
from ilora.lora.layer import layer_kind
from ilora.lora.spec import LoRASpec


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def inject(
    model: nn.Module, spec: LoRASpec, targets: Sequence[str], head: Sequence[str] = ()
) -> list[str]:
    """Wrap every module whose name matches a pattern in ``targets``; freeze all but the head.

    Args:
        model: the model, modified in place.
        spec: the LoRA spec every wrapped layer reads its scaling from.
        targets: regexes over module names.
        head: regexes over parameter names that stay trainable (classifier head).

    Returns:
        The sorted names of the wrapped modules.

    Raises:
        ValueError: if no module matches, or a matched module cannot be adapted.

    """
    patterns = [re.compile(t) for t in targets]
    chosen = [
        (name, mod)
        for name, mod in model.named_modules()
        if name and any(p.search(name) for p in patterns) and not isinstance(mod, LoRALinear)
    ]
    if not chosen:
        sample = ", ".join(n for n, _ in list(model.named_modules())[1:8])
        raise ValueError(
            f"no module matches lora.targets {list(targets)}; module names look like: {sample}"
        )
    for name, mod in chosen:
        if layer_kind(mod) is None:
            raise ValueError(
                f"lora.targets matched {name!r} ({type(mod).__name__}), which cannot be "
                "adapted; narrow the pattern to nn.Linear / 1x1 nn.Conv2d modules"
            )
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in chosen:
        _set_submodule(model, name, LoRALinear(mod, spec))
    head_res = [re.compile(h) for h in head]
    head_names = tuple(n for n, _ in model.named_parameters() if any(h.search(n) for h in head_res))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head_names)
    model.ilora_head = head_names  # type: ignore[assignment]
    return sorted(name for name, _ in chosen)
