"""A Hugging Face text encoder with mean pooling and a fresh, seeded linear head.

Pretrained weights and tokenizers are read from local directories only
(``local_files_only=True``); nothing here reaches the network. Dropout follows the module's
train/eval mode, which the engine sets.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel
from transformers import AutoTokenizer
from transformers import BertConfig
from transformers import BertModel

from ilora.seeding import generator

__all__ = [
    "EncoderClassifier",
    "load_encoder",
    "load_tokenizer",
    "seeded_linear",
    "tiny_bert",
    "truncate_layers",
]


def seeded_linear(in_features: int, out_features: int, *parts: object) -> nn.Linear:
    """Return an ``nn.Linear`` initialised like PyTorch's default, from a named generator.

    PyTorch's default (Kaiming-uniform with ``a=sqrt(5)``) draws both weight and bias from
    ``U(-1/sqrt(in), 1/sqrt(in))``; here the draws come from ``generator(*parts)`` (weight
    first, then bias), so the global RNG is never used.

    Args:
        in_features: input width.
        out_features: output width (number of classes for a head).
        *parts: the generator's name parts, e.g. ``(seed, "head")``.

    Returns:
        The initialised layer.

    """
    layer = nn.Linear(in_features, out_features, device="meta").to_empty(device="cpu")
    gen = generator(*parts)
    bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)  # (out, in)
        layer.bias.uniform_(-bound, bound, generator=gen)  # (out,)
    return layer


def _find_layer_list(backbone: nn.Module, total: int) -> tuple[nn.Module, str, nn.ModuleList]:
    """Return ``(parent, attribute, layers)`` of the first ``ModuleList`` of ``total`` layers.

    Raises:
        ValueError: if the backbone has no such list.

    """
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == total:
            parent_name, _, attr = name.rpartition(".")
            return backbone.get_submodule(parent_name), attr, module
    raise ValueError(f"found no list of {total} transformer layers in {type(backbone).__name__}")


def truncate_layers(backbone: nn.Module, num_layers: int | None) -> None:
    """Keep only the first ``num_layers`` transformer layers of ``backbone`` (in place).

    Args:
        backbone: a Hugging Face model with ``config.num_hidden_layers``.
        num_layers: layers to keep; ``None`` keeps all.

    Raises:
        ValueError: if ``num_layers`` is not in ``1..config.num_hidden_layers``.

    """
    if num_layers is None:
        return
    config: Any = backbone.config
    total = int(config.num_hidden_layers)
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_layers={num_layers} is out of range: allowed 1..{total}")
    parent, attr, layers = _find_layer_list(backbone, total)
    setattr(parent, attr, nn.ModuleList(list(layers)[:num_layers]))
    config.num_hidden_layers = num_layers


def _drop_pooler(backbone: nn.Module) -> None:
    """Replace an unused BERT-style ``pooler`` with ``nn.Identity`` (we mean-pool instead)."""
    if isinstance(getattr(backbone, "pooler", None), nn.Module):
        backbone.pooler = nn.Identity()


class EncoderClassifier(nn.Module):
    """Encoder + mean pooling over the attention mask + a linear head named ``classifier``.

    Attributes:
        backbone: the pretrained encoder (its pooler, if any, is replaced by ``nn.Identity``).
        classifier: the fresh head, ``hidden -> num_classes``, drawn from
            ``generator(seed, "head")``.

    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        seed: int,
        num_layers: int | None = None,
    ) -> None:
        """Wrap ``backbone`` with a seeded head.

        Args:
            backbone: a Hugging Face encoder returning ``last_hidden_state``.
            num_classes: number of output classes.
            seed: head seed; the same seed gives the same head on every client.
            num_layers: keep only the first ``num_layers`` layers (``None``: all).

        Raises:
            ValueError: if ``num_classes < 1`` or ``num_layers`` is out of range.

        """
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} is out of range: allowed >= 1")
        truncate_layers(backbone, num_layers)
        _drop_pooler(backbone)
        self.backbone = backbone
        config: Any = backbone.config
        self.classifier = seeded_linear(int(config.hidden_size), num_classes, seed, "head")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return class logits.

        Args:
            input_ids: ``(B, L)`` int64 token ids.
            attention_mask: ``(B, L)`` 1 for real tokens, 0 for padding.

        Returns:
            ``(B, C)`` logits.

        """
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden: torch.Tensor = out.last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, H)
        count = mask.sum(dim=1).clamp(min=1.0)  # (B, 1)
        logits: torch.Tensor = self.classifier(summed / count)  # (B, C)
        return logits


def _require_dir(model_dir: str | Path) -> Path:
    """Return ``model_dir`` as a path.

    Raises:
        FileNotFoundError: if it is not an existing directory.

    """
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {str(path)!r} does not exist (or is not a dir)")
    return path


def load_encoder(model_dir: str | Path, num_layers: int | None = None) -> nn.Module:
    """Load a pretrained encoder from a local Hugging Face directory (never downloads).

    Args:
        model_dir: directory with ``config.json`` and the weights.
        num_layers: keep only the first ``num_layers`` layers (``None``: all).

    Returns:
        The encoder (``AutoModel``), in the mode ``from_pretrained`` leaves it (eval).

    Raises:
        FileNotFoundError: if ``model_dir`` is not a directory.
        ValueError: if ``num_layers`` is out of range.

    """
    path = _require_dir(model_dir)
    model: nn.Module = AutoModel.from_pretrained(str(path), local_files_only=True)
    truncate_layers(model, num_layers)
    return model


def load_tokenizer(model_dir: str | Path) -> Any:
    """Load the fast tokenizer of a local Hugging Face directory (never downloads).

    Args:
        model_dir: directory with the tokenizer files.

    Returns:
        The tokenizer (a ``PreTrainedTokenizerFast``).

    Raises:
        FileNotFoundError: if ``model_dir`` is not a directory.
        ValueError: if only a slow (Python) tokenizer is available.

    """
    path = _require_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"no fast tokenizer in {str(path)!r} (need tokenizer.json)")
    return tokenizer


def _reinit_bert_(model: nn.Module, seed: int, initializer_range: float) -> None:
    """Re-draw every parameter of a BERT model from per-name generators (BERT's init scheme).

    Linear and embedding weights ~ ``N(0, initializer_range)`` from ``generator(seed,
    "tiny_bert", name)``; biases 0; LayerNorm weights 1; embedding padding rows 0.
    """
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            for p_name, param in module.named_parameters(recurse=False):
                name = f"{mod_name}.{p_name}" if mod_name else p_name
                if isinstance(module, nn.LayerNorm) and p_name == "weight":
                    param.fill_(1.0)
                elif p_name == "bias":
                    param.zero_()
                else:
                    gen = generator(seed, "tiny_bert", name)
                    param.normal_(0.0, initializer_range, generator=gen)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()  # (H,)


def tiny_bert(seed: int, num_classes: int = 4, vocab_size: int = 128) -> EncoderClassifier:
    """Build a tiny random BERT classifier for tests, reproducibly and without global RNG.

    The config is ``BertConfig(vocab_size, hidden_size=32, num_hidden_layers=2,
    num_attention_heads=2, intermediate_size=64)``. The model is built inside
    ``torch.random.fork_rng`` (so the global RNG state is restored), then every parameter is
    re-drawn from ``generator(seed, "tiny_bert", name)``; the head from ``generator(seed,
    "head")``. Module names are the real ``BertModel`` ones.

    Args:
        seed: model seed.
        num_classes: head width.
        vocab_size: vocabulary size (token ids must be below it; 0 is padding).

    Returns:
        The classifier (train/eval mode is the engine's business).

    """
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    with torch.random.fork_rng(devices=[]):
        backbone = BertModel(config)
    _reinit_bert_(backbone, seed, float(config.initializer_range))
    return EncoderClassifier(backbone, num_classes, seed)
