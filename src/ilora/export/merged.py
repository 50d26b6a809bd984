"""``ilora export RUN --format merged``: the full model, every update merged into its weights.

Text: a Hugging Face model directory (``config.json`` with ``id2label``, ``model.safetensors``,
the tokenizer) whose ``AutoModelForSequenceClassification.from_pretrained(DIR,
trust_remote_code=True)`` is the run's classifier. Its mean pooling over the attention mask is no
stock transformers head, so the class (``modeling_ilora.py``, a dozen lines, written here from
:data:`MODELING`) travels with the weights; its parameter names are the encoder's own under
``backbone.`` and ``classifier``. Images: ``model.safetensors`` with the state dict of ILoRA's
``ImageClassifier``; the README written beside it holds the loading code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from ilora.export import Rebuilt
from ilora.export import folded_copy
from ilora.export.files import describe_run
from ilora.export.files import is_text
from ilora.export.files import save_hf_base
from ilora.export.files import write_readme

__all__ = ["MODELING", "export_merged"]

MODELING = '''\
"""ILoRA's text classifier: a Hugging Face encoder, mean pooling over the mask, a linear head."""

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel, {config_class}
from transformers.modeling_outputs import SequenceClassifierOutput


class IloraMeanPoolClassifier(PreTrainedModel):
    config_class = {config_class}
    base_model_prefix = "backbone"

    def __init__(self, config):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config)
        if isinstance(getattr(self.backbone, "pooler", None), nn.Module):
            self.backbone.pooler = nn.Identity()  # unused: the head reads the mean
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, H)
        logits = self.classifier(pooled)  # (B, C)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
'''


def _hf_config(rebuilt: Rebuilt, path: Path) -> None:
    """Rewrite ``path/config.json`` for the classifier: architecture, auto_map, labels."""
    config: dict[str, Any] = json.loads((path / "config.json").read_text())
    names = rebuilt.class_names
    config.update(
        architectures=["IloraMeanPoolClassifier"],
        auto_map={"AutoModelForSequenceClassification": "modeling_ilora.IloraMeanPoolClassifier"},
        id2label={str(i): n for i, n in enumerate(names)},
        label2id={n: i for i, n in enumerate(names)},
    )
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def export_merged(rebuilt: Rebuilt, dest: Path) -> dict[str, Any]:
    """Write the merged export of ``rebuilt`` into ``dest``; return ``ilora_export.json``."""
    merged, folded = folded_copy(rebuilt.model, merge_all=True)
    dest.mkdir(parents=True, exist_ok=True)
    text = is_text(merged)
    state = {k: v.detach().contiguous().clone() for k, v in merged.state_dict().items()}
    if text:
        save_hf_base(rebuilt, merged, dest)  # config.json, tokenizer (weights replaced below)
        for stale in dest.glob("model*.safetensors*"):
            stale.unlink()
        _hf_config(rebuilt, dest)
        config_class = type(merged.backbone.config).__name__  # type: ignore[union-attr]
        (dest / "modeling_ilora.py").write_text(MODELING.format(config_class=config_class))
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    meta = describe_run(rebuilt, "merged", str(dest.resolve()), folded)
    (dest / "ilora_export.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    write_readme(dest, meta, text)
    return meta
