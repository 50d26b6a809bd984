"""Centred head inputs: ``train.center_head``, a fixed shift of what the classifier head reads.

A head ``logits = W h + b`` over features ``h`` whose mean ``c`` is large next to their spread
(mean-pooled early encoder layers: ``|c|`` 4.0 against 2.7 on rotten-tomatoes' first MiniLM
layer) is badly conditioned: every step on ``W`` moves ``W c``, a second bias, and a FedAvg'd
head swings to whichever class a round's clients hold. With ``train.center_head = n`` the head
reads ``h - c``, where ``c`` is the mean head input of the frozen backbone (adapters removed)
over ``n`` seeded examples of the clients' pooled training data, fixed before round 1:

    logits = W (h - c) + b = W h + (b - W c)

the same family of functions (a reparametrisation of the bias), better conditioned for every
method alike. Ours, not any paper's; off by default. ``c`` is a preprocessing statistic like
a vocabulary: it is computed where the experiment is built (both runtimes, the same seeded
examples), never from the validation or test split, and not sent in any round.

In the run the shift is a forward pre-hook; the weights stay ``W, b``. What is written for use
outside ILoRA holds the plain head instead: the run's saved ``adapter/``
(``engine.outputs.save_adapter``) replaces the bias by :func:`fold_center`'s ``b' = b - W c``
and records it in :data:`FOLDED_NOTE`, and ``ilora export`` (peft and merged) rebuilds the model
from that adapter, so every written model computes ``W h + b'``, the trained function, without
the hook (the rebuilt model has none: the centre is never applied twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ilora.engine.local import backbone_features
from ilora.engine.local import head_module
from ilora.engine.shares import Shares
from ilora.seeding import np_rng

__all__ = ["FOLDED_NOTE", "HeadCenter", "center_head", "fold_center", "fold_head", "head_center"]

FOLDED_NOTE = "ilora_head_center.json"  # in a saved adapter/: its head has the centre folded in


@dataclass(frozen=True)
class HeadCenter:
    """What ``train.center_head`` shifted: the head ``module`` reads its input minus ``center``.

    ``module`` is the head's path in the model (``classifier``), ``center`` its ``(d,)`` shift.
    """

    module: str
    center: torch.Tensor


def head_center(model: nn.Module, shares: Shares, n: int, seed: int, batch: int) -> torch.Tensor:
    """Return the mean frozen-backbone head input ``c`` ``(d,)`` over ``n`` seeded examples.

    The examples are drawn without replacement from the clients' pooled training shares (all of
    them when ``n`` exceeds their number) by ``np_rng(seed, "head-center")``.
    """
    pooled = shares.flat  # every client's training indices into shares.dataset
    take = min(n, len(pooled))
    picked = np.sort(np_rng(seed, "head-center").choice(pooled, size=take, replace=False))
    feats = backbone_features(model, shares.dataset.subset(picked), batch, 0)
    return feats.inputs.mean(dim=0)  # (d,)


def center_head(model: nn.Module, center: torch.Tensor) -> HeadCenter:
    """Make the head of ``model`` read its input minus ``center`` (a forward pre-hook).

    The hook runs before any hook registered later on the head (``backbone_features`` then
    sees the centred inputs, what the head reads). Returns the head's path and the centre, for
    :func:`fold_head` where the model is written.

    Raises:
        ValueError: if the head is not a linear layer with a bias (nothing to fold ``c`` into).

    """
    head = head_module(model)
    name = next(n for n, m in model.named_modules() if m is head)
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise _unfoldable(name)
    fixed = center.detach().clone().float()

    def shift(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        centred = x - fixed.to(device=x.device, dtype=x.dtype).reshape(x.shape[1:])
        return (centred, *args[1:])

    head.register_forward_pre_hook(shift)
    return HeadCenter(name, fixed)


def fold_center(weight: torch.Tensor, bias: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Return the bias ``b' = b - W c`` that makes a plain head compute ``W (h - c) + b``.

    ``weight`` ``(C, d)``, ``bias`` ``(C,)``, ``center`` ``(d,)``; summed in float64, returned
    in ``bias``'s dtype and device.
    """
    shift = weight.detach().double() @ center.detach().to(weight.device).double()  # (C,)
    return (bias.detach().double() - shift).to(bias.dtype)


def fold_head(params: Mapping[str, torch.Tensor], centre: HeadCenter) -> dict[str, torch.Tensor]:
    """Return ``params`` (head parameters by name, others untouched) with the centre folded.

    Raises:
        ValueError: if the head has no ``weight`` (C, d) and ``bias`` among ``params``.

    """
    weight = params.get(f"{centre.module}.weight")
    bias_key = f"{centre.module}.bias"
    if weight is None or weight.dim() != 2 or bias_key not in params:
        raise _unfoldable(centre.module)
    return {**params, bias_key: fold_center(weight, params[bias_key], centre.center)}


def _unfoldable(module: str) -> ValueError:
    return ValueError(
        f"train.center_head needs the head {module!r} to be a linear layer with a bias (the "
        "centre is folded into it when the model is written); use train.center_head: 0"
    )
