"""``ilora export RUN --format peft``: an adapter plain ``peft`` loads onto the real base model.

Text: ``PeftModel.from_pretrained(AutoModel.from_pretrained(base, num_hidden_layers=k), DIR)``
gives the run's encoder; the head (``head.safetensors``) is applied to the mean of
``last_hidden_state`` over the attention mask. Keys are the base model's own module paths (no
``backbone.`` prefix). Images: the base is ILoRA's MobileNetV2 classifier; 1×1-conv factors are
4-D ``(r, d_in, 1, 1)`` / ``(d_out, r, 1, 1)`` as PEFT's ``Conv2d`` LoRA stores them, and the
head is in ``modules_to_save``. Scalings are exact: ``lora_alpha = s·r`` per layer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ilora.export import PREFIX
from ilora.export import Rebuilt
from ilora.export import folded_copy
from ilora.export import peft_pair
from ilora.export.files import describe_run
from ilora.export.files import is_text
from ilora.export.files import save_hf_base
from ilora.export.files import write_readme
from ilora.lora.state import adapted
from ilora.lora.state import head_names

__all__ = ["export_peft"]


def _factors(rebuilt: Rebuilt, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return PEFT's factor tensors and ``{module: (rank, alpha)}`` of every expressible layer."""
    tensors, shapes = {}, {}
    for name, layer in adapted(rebuilt.model).items():
        pair = peft_pair(layer)
        if pair is None:
            continue
        A, B, scaling = pair
        module = name.removeprefix(prefix)
        if layer.kind == "conv1x1":
            A, B = A[:, :, None, None], B[:, :, None, None]  # (r, d_in, 1, 1), (d_out, r, 1, 1)
        tensors[f"{PREFIX}{module}.lora_A.weight"] = A.contiguous().clone()
        tensors[f"{PREFIX}{module}.lora_B.weight"] = B.contiguous().clone()
        shapes[module] = (int(A.shape[0]), scaling * int(A.shape[0]), layer.kind)
    return tensors, shapes


def _adapter_config(shapes: dict[str, Any], base: str, heads: list[str]) -> dict[str, Any]:
    """Return ``adapter_config.json``: the commonest rank/alpha, patterns for the others."""
    (r, alpha), _ = Counter((s[0], s[1]) for s in shapes.values()).most_common(1)[0]
    ranks = {re.escape(m): s[0] for m, s in shapes.items() if s[0] != r}
    alphas = {re.escape(m): s[1] for m, s in shapes.items() if s[1] != alpha}
    return {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "use_rslora": False,
        "lora_dropout": 0.0,
        "target_modules": sorted(shapes),
        "bias": "none",
        "modules_to_save": heads or None,
        "task_type": None,
        "base_model_name_or_path": base,
        "fan_in_fan_out": any(s[2] == "conv1d" for s in shapes.values()),
        "init_lora_weights": True,
    }


def export_peft(rebuilt: Rebuilt, dest: Path) -> dict[str, Any]:
    """Write the PEFT export of ``rebuilt`` into ``dest``; return ``ilora_export.json``."""
    text = is_text(rebuilt.model)
    prefix = "backbone." if text else ""
    tensors, shapes = _factors(rebuilt, prefix)
    if not shapes:
        raise ValueError(
            "the run's model has no low-rank factors PEFT can hold; use --format merged"
        )
    base_model, folded = folded_copy(rebuilt.model, merge_all=False)
    dest.mkdir(parents=True, exist_ok=True)
    heads: list[str] = []
    head = {
        n: p.detach().clone()
        for n, p in rebuilt.model.named_parameters()
        if n in head_names(rebuilt.model)
    }
    if text:
        save_file(head, str(dest / "head.safetensors"))
        base = save_hf_base(rebuilt, base_model, dest / "base") if folded else None
        base_path = str(base or rebuilt.task.encoder_dir().resolve())  # type: ignore[attr-defined]
    else:
        heads = sorted({n.rsplit(".", 1)[0] for n in head})
        tensors.update({f"{PREFIX}{n}": t for n, t in head.items()})
        base_path = "ilora:" + rebuilt.cfg.task
        if folded:
            state = {k: v.contiguous() for k, v in base_model.state_dict().items()}
            save_file(state, str(dest / "base_model.safetensors"))
            base_path = str((dest / "base_model.safetensors").resolve())
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    config = _adapter_config(shapes, base_path, heads)
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    meta = describe_run(rebuilt, "peft", base_path, folded)
    (dest / "ilora_export.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    write_readme(dest, meta, text)
    return meta
