"""Low-precision copies of the frozen base weights, made once instead of at every call.

Under ``torch.autocast`` every matmul and convolution casts its fp32 operands to bf16. Autocast
keeps the cast of a leaf tensor that requires grad until its block ends, but casts a frozen
weight (``requires_grad=False``) again at every call: in every step's forward and in every
evaluation batch. Under ``train.precision: bf16`` (:func:`ilora.engine.compute.place`) the frozen
``nn.Linear`` and ``nn.Conv2d`` layers of the model compute with a copy of their weight and bias
in autocast's dtype, made once per layer and made again only when the weight or bias changes
(its version counter, storage, device: a merge, a load). The copy is the tensor autocast would
make (``Tensor.to`` is deterministic), so the forward and the backward are bitwise those of
plain autocast (``tests/engine/test_castcache.py``).

A convolution's copy is kept channels-last (``torch.channels_last``): PyTorch then runs the
convolution and the layers after it in that memory format, the fp32 parameters themselves
staying as they are. On this machine's oneDNN kernels the convolutions, batch norms and
activations give bitwise the contiguous result (the same test; MobileNetV2's step too), about
1.2x faster on MobileNetV2 (``ilora bench throughput --compare``). One documented difference: a
dropout applied to a 4-D activation draws its mask in memory order, so under bf16 it is another
sample of the same distribution than it would be contiguous (still reproducible run to run).
None of the packaged models has such a dropout (MobileNetV2's is on the pooled features).

The layers' classes are swapped for the subclasses below (same parameters, state dict and
``isinstance``) by :func:`enable`, and back by :func:`disable`. Outside bf16 autocast, or for a
layer whose weight or bias requires grad, they are the plain layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Operands = tuple[torch.Tensor, torch.Tensor | None]
_SLOT = "_ilora_cast"  # instance attribute holding (key, weight copy, bias copy)


def _key(layer: nn.Linear | nn.Conv2d, dtype: torch.dtype) -> tuple[object, ...]:
    """Return what identifies the layer's current weight and bias for a copy in ``dtype``."""
    return tuple(
        None if t is None else (t._version, t.data_ptr(), t.device, t.shape)
        for t in (layer.weight, layer.bias)
    ) + (dtype,)


def cast_operands(layer: nn.Linear | nn.Conv2d) -> Operands | None:
    """Return the layer's cached ``(weight, bias)`` in autocast's dtype, or ``None`` to skip.

    ``None`` when autocast is off on the weight's device or the weight or bias requires grad
    (autocast caches those itself within its block).
    """
    w, b = layer.weight, layer.bias
    device = w.device.type
    trainable = w.requires_grad or (b is not None and b.requires_grad)
    if trainable or not torch.is_autocast_enabled(device):
        return None
    dtype = torch.get_autocast_dtype(device)
    key = _key(layer, dtype)
    slot = layer.__dict__.get(_SLOT)
    if slot is None or slot[0] != key:
        fmt = torch.channels_last if w.dim() == 4 else torch.preserve_format
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor, also from eval
            slot = (key, w.to(dtype, memory_format=fmt), None if b is None else b.to(dtype))
        layer.__dict__[_SLOT] = slot
    return slot[1], slot[2]


class CachedCastLinear(nn.Linear):
    """``nn.Linear`` that computes with the cached cast of its frozen weight under autocast."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Linear's name)
        ops = cast_operands(self)
        return super().forward(input) if ops is None else F.linear(input, *ops)


class CachedCastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes with the cached cast of its frozen weight under autocast."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Conv2d's name)
        ops = cast_operands(self)
        return super().forward(input) if ops is None else self._conv_forward(input, *ops)


SWAPS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: CachedCastLinear,
    nn.Conv2d: CachedCastConv2d,
}


def enable(model: nn.Module) -> int:
    """Give every plain ``nn.Linear``/``nn.Conv2d`` of ``model`` the cast cache; return how many."""
    count = 0
    for module in model.modules():
        cached = SWAPS.get(type(module))
        if cached is not None:
            module.__class__ = cached
            count += 1
    return count


def disable(model: nn.Module) -> None:
    """Undo :func:`enable`: the plain classes again, the copies dropped."""
    plain = {cached: base for base, cached in SWAPS.items()}
    for module in model.modules():
        base = plain.get(type(module))
        if base is not None:
            module.__class__ = base
            module.__dict__.pop(_SLOT, None)
