"""``LoRALinear``: a frozen layer plus an optional dense residual and low-rank factors.

``y = base(x) + x Rᵀ + s·((drop(x) Aᵀ) Cᵀ ⊙ m) Bᵀ`` with ``A (r, d_in)``, ``B (d_out, r)``, an
optional ``C (r, r)`` (tri-matrix LoRA), an optional rank mask ``m (r,)`` and the scaling ``s``
that ``LoRASpec.scale(r)`` owns. The rank is whatever shape is installed, so clients of any rank
share this one class. It wraps ``nn.Linear``, 1x1 ``nn.Conv2d`` (stride 1, no groups) and Hugging
Face ``Conv1D`` (weight stored ``(d_in, d_out)``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ilora.lora.spec import LoRASpec

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


class LoRALinear(nn.Module):
    """A frozen base layer with swappable LoRA factors and residual (see the module docstring)."""

    def __init__(self, base: nn.Module, spec: LoRASpec) -> None:
        super().__init__()
        kind = layer_kind(base)
        if kind is None:
            raise ValueError(
                f"cannot adapt {type(base).__name__}: LoRA wraps nn.Linear, "
                "1x1 nn.Conv2d (stride 1, groups 1) and Conv1D"
            )
        self.base, self.kind, self.spec = base, kind, spec
        for p in base.parameters():
            p.requires_grad_(False)
        self.d_out, self.d_in = self.base_weight().shape
        self.dropout: nn.Module = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.lora_A: nn.Parameter | None = None
        self.lora_B: nn.Parameter | None = None
        self.lora_C: nn.Parameter | None = None
        self.residual: torch.Tensor | None = None
        self.rank_mask: torch.Tensor | None = None
        self.merged = False

    @property
    def rank(self) -> int:
        return 0 if self.lora_A is None else int(self.lora_A.shape[0])

    @property
    def scaling(self) -> float:
        return self.spec.scale(self.rank) if self.rank else 0.0

    def base_weight(self) -> torch.Tensor:
        """Return the frozen weight as ``(d_out, d_in)`` (a view, never a copy)."""
        w = self.base.weight
        assert isinstance(w, torch.Tensor)
        if self.kind == "conv1x1":
            return w.view(w.shape[0], w.shape[1])  # (d_out, d_in, 1, 1) -> (d_out, d_in)
        return w.t() if self.kind == "conv1d" else w  # Conv1D stores (d_in, d_out)

    def _mul(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Apply ``x ↦ x wᵀ`` along the feature axis (last for linear, 1 for conv)."""
        if self.kind == "conv1x1":
            return F.conv2d(x, w[:, :, None, None])  # x: (N, d_in, H, W) -> (N, d_out, H, W)
        return F.linear(x, w)  # x: (..., d_in) -> (..., d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base(x)
        if self.merged:
            return y
        if self.residual is not None:
            y = y + self._mul(x, self.residual)
        if self.lora_A is not None and self.lora_B is not None:
            h = self._mul(self.dropout(x), self.lora_A)  # (..., r)
            if self.lora_C is not None:
                h = self._mul(h, self.lora_C)  # (..., r)
            if self.rank_mask is not None:
                shape = (-1, 1, 1) if self.kind == "conv1x1" else (-1,)
                h = h * self.rank_mask.view(shape)
            y = y + self.scaling * self._mul(h, self.lora_B)  # (..., d_out)
        return y

    def set_adapter(
        self,
        A: torch.Tensor | None,
        B: torch.Tensor | None,
        C: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Install factors (copied into fresh parameters) or remove them with ``None``.

        Raises:
            ValueError: if shapes do not fit the layer or the rank exceeds ``min(d_in, d_out)``.

        """
        if (A is None) != (B is None):
            raise ValueError("lora_A and lora_B must be installed together")
        if A is not None and B is not None:
            r = A.shape[0]
            if A.shape != (r, self.d_in) or B.shape != (self.d_out, r):
                raise ValueError(
                    f"factor shapes A{tuple(A.shape)} B{tuple(B.shape)} do not fit a "
                    f"({self.d_out}, {self.d_in}) layer at rank {r}"
                )
            if r > min(self.d_in, self.d_out):
                raise ValueError(
                    f"rank {r} exceeds min(d_in, d_out) = {min(self.d_in, self.d_out)} "
                    "of this layer; lower lora.rank/lora.ranks"
                )
            if C is not None and C.shape != (r, r):
                raise ValueError(f"lora_C must be ({r}, {r}), got {tuple(C.shape)}")
        self.lora_A = None if A is None else nn.Parameter(A.detach().clone().float())
        self.lora_B = None if B is None else nn.Parameter(B.detach().clone().float())
        self.lora_C = None if C is None else nn.Parameter(C.detach().clone().float())
        self.rank_mask = None if mask is None else mask.detach().clone().float()

    def set_residual(self, residual: torch.Tensor | None) -> None:
        """Install a dense ``(d_out, d_in)`` delta added to the base, or remove it."""
        if residual is not None and residual.shape != (self.d_out, self.d_in):
            raise ValueError(
                f"residual must be ({self.d_out}, {self.d_in}), got {tuple(residual.shape)}"
            )
        self.residual = None if residual is None else residual.detach().clone().float()

    def delta_weight(self) -> torch.Tensor:
        """Return the dense change this adapter applies: ``R + s·B C A`` ``(d_out, d_in)``."""
        delta = torch.zeros(self.d_out, self.d_in)
        if self.residual is not None:
            delta = delta + self.residual
        if self.lora_A is not None and self.lora_B is not None:
            mid = self.lora_A if self.lora_C is None else self.lora_C @ self.lora_A  # (r, d_in)
            if self.rank_mask is not None:
                mid = self.rank_mask[:, None] * mid
            delta = delta + self.scaling * (self.lora_B @ mid)  # (d_out, d_in)
        return delta.detach()

    @torch.no_grad()
    def merge(self) -> None:
        """Add the adapter into the base weight (inference speed); ``unmerge`` undoes it."""
        if not self.merged:
            self.base_weight().add_(self.delta_weight().to(self.base_weight().dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_weight().sub_(self.delta_weight().to(self.base_weight().dtype))
            self.merged = False
