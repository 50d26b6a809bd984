"""The files every export shares: ``ilora_export.json``, a README with loading code, HF bases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ilora.export import Rebuilt

__all__ = ["describe_run", "is_text", "save_hf_base", "write_readme"]

POOLING = "mean of last_hidden_state over attention_mask, then head (classifier.weight, .bias)"


def is_text(model: nn.Module) -> bool:
    """Return True for a Hugging Face encoder classifier (``EncoderClassifier``)."""
    from ilora.models.encoder import EncoderClassifier

    return isinstance(model, EncoderClassifier)


def save_hf_base(rebuilt: Rebuilt, model: nn.Module, path: Path) -> Path:
    """Save ``model``'s encoder (truncated depth, folded weights) and the tokenizer to ``path``."""
    from ilora.models.encoder import load_tokenizer

    backbone: Any = model.backbone
    backbone.save_pretrained(str(path))
    load_tokenizer(rebuilt.task.encoder_dir()).save_pretrained(str(path))  # type: ignore[attr-defined]
    return path.resolve()


def describe_run(rebuilt: Rebuilt, fmt: str, base: str, folded: list[str]) -> dict[str, Any]:
    """Return ``ilora_export.json``: what the export holds and how to use it."""
    names = rebuilt.class_names
    meta: dict[str, Any] = {
        "format": fmt,
        "task": rebuilt.cfg.task,
        "algorithm": rebuilt.cfg.algorithm,
        "base_model_name_or_path": base,
        "folded_layers": folded,
        "num_classes": len(names),
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }
    if is_text(rebuilt.model):
        backbone: Any = rebuilt.model.backbone
        meta["num_hidden_layers"] = int(backbone.config.num_hidden_layers)
        meta["pooling"] = POOLING
        meta["max_len"] = int(rebuilt.cfg.task_args.get("max_len", 0)) or None
    else:
        meta["seed"] = rebuilt.cfg.seed
        meta["pretrained"] = bool(rebuilt.cfg.task_args.get("pretrained", True))
    if rebuilt.cfg.train.center_head:  # engine.headcenter: the head here is the plain one
        meta["head_center"] = "train.center_head's shift c is folded into the head's bias: b - W c"
    if folded:
        meta["note"] = (
            "updates PEFT cannot hold (a dense residual such as ILoRA's init offset, or a "
            "non-plain LoRA form) of the folded_layers are added to the base weights saved here"
        )
    return meta


_TEXT_PEFT = """\
import json
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

meta = json.load(open("{dir}/ilora_export.json"))
base_dir = meta["base_model_name_or_path"]
base = AutoModel.from_pretrained(base_dir, num_hidden_layers=meta["num_hidden_layers"])
model = PeftModel.from_pretrained(base, "{dir}").eval()
head = load_file("{dir}/head.safetensors")
enc = AutoTokenizer.from_pretrained(base_dir)(["some text"], return_tensors="pt", padding=True)
hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
mask = enc["attention_mask"].unsqueeze(-1).float()
pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
logits = pooled @ head["classifier.weight"].T + head["classifier.bias"]
print(meta["id2label"][str(int(logits.argmax(-1)[0]))])
"""

_TEXT_MERGED = """\
from transformers import AutoModelForSequenceClassification, AutoTokenizer

# mean pooling is no stock head: the class is in modeling_ilora.py beside the weights
model = AutoModelForSequenceClassification.from_pretrained("{dir}", trust_remote_code=True).eval()
enc = AutoTokenizer.from_pretrained("{dir}")(["some text"], return_tensors="pt", padding=True)
logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
print(model.config.id2label[int(logits.argmax(-1)[0])])
"""

_IMAGE_PEFT = """\
import json
from peft import PeftModel
from safetensors.torch import load_file
from ilora.models.mobilenet_v2 import ImageClassifier, mobilenet_v2_features

meta = json.load(open("{dir}/ilora_export.json"))
seed = meta["seed"]
model = ImageClassifier(mobilenet_v2_features(meta["pretrained"], seed), meta["num_classes"], seed)
if meta["folded_layers"]:  # the base with what PEFT cannot hold folded in
    model.load_state_dict(load_file(meta["base_model_name_or_path"]))
model = PeftModel.from_pretrained(model, "{dir}").eval()
logits = model(pixels=images)  # images: (B, C, H, W) uint8 0..255 or float in [0, 1]
"""

_IMAGE_MERGED = """\
import json
from safetensors.torch import load_file
from ilora.models.mobilenet_v2 import ImageClassifier, mobilenet_v2_features

meta = json.load(open("{dir}/ilora_export.json"))
model = ImageClassifier(mobilenet_v2_features(False, 0), meta["num_classes"], 0)
model.load_state_dict(load_file("{dir}/model.safetensors"))
logits = model.eval()(pixels=images)  # images: (B, C, H, W) uint8 0..255 or float in [0, 1]
"""

CODE = {
    ("peft", True): _TEXT_PEFT,
    ("merged", True): _TEXT_MERGED,
    ("peft", False): _IMAGE_PEFT,
    ("merged", False): _IMAGE_MERGED,
}


def write_readme(dest: Path, meta: dict[str, Any], text: bool) -> None:
    """Write ``README.md`` with the code that loads this export."""
    code = CODE[(meta["format"], text)].format(dir=dest.resolve())
    folded = ", ".join(meta["folded_layers"]) or "none"
    (dest / "README.md").write_text(
        f"# {meta['algorithm']} on {meta['task']}: {meta['format']} export\n\n"
        f"Layers with updates folded into the saved base weights: {folded}.\n\n"
        f"```python\n{code}```\n"
    )
