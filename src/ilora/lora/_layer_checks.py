"""What ``LoRALinear`` can wrap, and the shape checks of what it installs.

Pure functions of shapes: each raises ``ValueError`` naming the shapes and what fits a layer
of weight ``(d_out, d_in)`` (``layer.py`` has the layer's math and its parts).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

LayerKind = Literal["linear", "conv1x1", "conv1d"]


def layer_kind(module: nn.Module) -> LayerKind | None:
    """Return how ``module`` can be adapted, or ``None`` when it cannot."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        plain = module.groups == 1 and module.stride == (1, 1) and module.padding in ((0, 0), 0)
        return "conv1x1" if module.kernel_size == (1, 1) and plain else None
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return "conv1d"
    return None


def check_pair(
    d_out: int, d_in: int, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor | None
) -> None:
    """Check ``A (r, d_in)``, ``B (d_out, r)``, ``C (r, r)`` and ``r <= min(d_in, d_out)``."""
    r = A.shape[0]
    if A.shape != (r, d_in) or B.shape != (d_out, r):
        raise ValueError(
            f"factor shapes A{tuple(A.shape)} B{tuple(B.shape)} do not fit a "
            f"({d_out}, {d_in}) layer at rank {r}"
        )
    if r > min(d_in, d_out):
        raise ValueError(
            f"rank {r} exceeds min(d_in, d_out) = {min(d_in, d_out)} "
            "of this layer; lower lora.rank/lora.ranks"
        )
    if C is not None and C.shape != (r, r):
        raise ValueError(f"lora_C must be ({r}, {r}), got {tuple(C.shape)}")


def check_nested(d_out: int, d_in: int, r: int, parts: tuple[torch.Tensor, ...]) -> None:
    """Check ``outer_A (R, d_in)``, ``outer_B (d_out, R)``, ``inner_A (R, r)``, ``inner_B (r, R)``.

    The outer rank ``R`` is at most ``min(d_in, d_out)``.
    """
    outer_A, outer_B, inner_A, inner_B = parts
    R = int(outer_A.shape[0])
    fits = (
        outer_A.shape == (R, d_in)
        and outer_B.shape == (d_out, R)
        and inner_A.shape == (R, r)
        and inner_B.shape == (r, R)
    )
    if not fits or R > min(d_in, d_out):
        raise ValueError(
            f"nested shapes outer_A{tuple(outer_A.shape)} outer_B{tuple(outer_B.shape)} "
            f"inner_A{tuple(inner_A.shape)} inner_B{tuple(inner_B.shape)} do not fit a "
            f"({d_out}, {d_in}) layer with a rank-{r} pair (outer rank <= "
            f"{min(d_in, d_out)})"
        )


def check_experts(
    d_out: int,
    d_in: int,
    bank: tuple[torch.Tensor, torch.Tensor],
    router: torch.Tensor,
    emap: torch.Tensor,
) -> None:
    """Check an expert bank ``(K, r_b, d_in)``, ``(K, d_out, r_b)``, its router and its map.

    The router is ``(n >= K + 1, d_in)``; the map ``(n,)`` holds integers in ``[0, K]``.
    """
    bank_A, bank_B = bank
    k, r = (int(bank_A.shape[0]), int(bank_A.shape[1])) if bank_A.dim() == 3 else (-1, -1)
    if r < 1 or bank_A.shape != (k, r, d_in) or bank_B.shape != (k, d_out, r):
        raise ValueError(
            f"expert shapes {tuple(bank_A.shape)} {tuple(bank_B.shape)} do not fit "
            f"(K, r_b, {d_in}) and (K, {d_out}, r_b) of this layer"
        )
    n = int(router.shape[0]) if router.dim() == 2 else -1
    if router.shape != (n, d_in) or n < k + 1:
        raise ValueError(f"router must be (n >= {k + 1}, {d_in}), got {tuple(router.shape)}")
    in_range = bool(((emap >= 0) & (emap <= k)).all())
    if emap.shape != (n,) or emap.is_floating_point() or not in_range:
        raise ValueError(f"expert_map must be {n} integers in [0, {k}], got {emap.tolist()}")
