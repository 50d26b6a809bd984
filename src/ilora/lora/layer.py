"""``LoRALinear``: a frozen layer plus an optional dense residual and low-rank factors.

``y = base(x) + x Rᵀ + s·((drop(x) Aᵀ) Cᵀ ⊙ m) Bᵀ`` with ``A (r, d_in)``, ``B (d_out, r)``, an
optional ``C (r, r)`` (tri-matrix LoRA), an optional rank mask ``m (r,)`` and the scaling ``s``
that ``LoRASpec.scale(r)`` owns. The rank is whatever shape is installed, so clients of any rank
share this one class. It wraps ``nn.Linear``, 1x1 ``nn.Conv2d`` (stride 1, no groups) and Hugging
Face ``Conv1D`` (weight stored ``(d_in, d_out)``).

Optional routed expert bank (mixture of LoRA experts, FedLEASE): ``K`` frozen experts
``E_A (K, r_b, d_in)``, ``E_B (K, d_out, r_b)`` beside the live pair ``(A, B)`` (expert ``K``), a
router ``G (n, d_in)`` and an integer map ``π (n,)`` from router outputs to experts ``0..K``.
Per token ``p = softmax(G x)``, the ``K + 1`` largest ``p_j`` are kept and renormalised to
``w_j``, expert ``e`` gets the gate ``g_e = Σ_{kept j: π(j) = e} w_j``, and
``y = base(x) + x Rᵀ + Σ_e s_e g_e (drop(x) A_eᵀ) B_eᵀ`` with ``s_e`` the scaling of expert
``e``'s rank: ``s(r)`` for the pair, ``s(r_b)`` for the bank (``r_b = r`` unless the bank is kept
at a larger rank than the pair, as in heterogeneous-rank FedLEASE). The router reads ``x`` (no
dropout); only the pair and the router are parameters, so the bank stays frozen. Without a bank
the layer is exactly the single adapter above.

Optional nested update (mFedLoRU): a frozen outer pair ``A_o (R, d_in)``, ``B_o (d_out, R)`` and
trainable inner maps ``P (R, r)``, ``Q (r, R)`` make the installed rank-``r`` pair ``A (r, d_in)``,
``B (d_out, r)`` a low-rank update of the outer factors: the adapter applies
``A_e = A_o + P A`` and ``B_e = B_o + B Q`` in place of ``A`` and ``B``, with the scaling
``s(R)`` of the outer rank. Without it the layer is exactly the single adapter above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ilora.lora._layer_checks import check_experts
from ilora.lora._layer_checks import check_nested
from ilora.lora._layer_checks import check_pair
from ilora.lora._layer_checks import layer_kind
from ilora.lora.spec import LoRASpec

__all__ = ["LoRALinear", "layer_kind"]


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
        self.router: nn.Parameter | None = None
        self.experts_A: torch.Tensor | None = None
        self.experts_B: torch.Tensor | None = None
        self.expert_map: torch.Tensor | None = None
        self.outer_A: torch.Tensor | None = None  # (R, d_in), frozen
        self.outer_B: torch.Tensor | None = None  # (d_out, R), frozen
        self.inner_A: nn.Parameter | None = None  # (R, r)
        self.inner_B: nn.Parameter | None = None  # (r, R)
        self.merged = False

    @property
    def rank(self) -> int:
        return 0 if self.lora_A is None else int(self.lora_A.shape[0])

    @property
    def scaling(self) -> float:
        r = self.rank if self.outer_A is None else int(self.outer_A.shape[0])
        return self.spec.scale(r) if r else 0.0

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
        if self.router is not None:
            return y + self._routed(x)
        if self.lora_A is not None and self.lora_B is not None:
            A, B = self.effective_factors()
            h = self._mul(self.dropout(x), A)  # (..., r)
            if self.lora_C is not None:
                h = self._mul(h, self.lora_C)  # (..., r)
            if self.rank_mask is not None:
                shape = (-1, 1, 1) if self.kind == "conv1x1" else (-1,)
                h = h * self.rank_mask.view(shape)
            y = y + self.scaling * self._mul(h, B)  # (..., d_out)
        return y

    def effective_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the ``(A, B)`` the adapter applies: the pair, or ``(A_o + P A, B_o + B Q)``."""
        assert self.lora_A is not None and self.lora_B is not None
        if self.outer_A is None or self.outer_B is None:
            return self.lora_A, self.lora_B
        assert self.inner_A is not None and self.inner_B is not None
        A = self.outer_A + self.inner_A @ self.lora_A  # (R, r) @ (r, d_in) -> (R, d_in)
        B = self.outer_B + self.lora_B @ self.inner_B  # (d_out, r) @ (r, R) -> (d_out, R)
        return A, B

    def set_nested(
        self,
        outer_A: torch.Tensor | None,
        outer_B: torch.Tensor | None,
        inner_A: torch.Tensor | None,
        inner_B: torch.Tensor | None,
    ) -> None:
        """Install a nested update (outer pair frozen, inner maps trainable; copied) or remove it.

        Needs the pair installed first (``set_adapter``, which removes any nested update),
        without ``lora_C``, a rank mask or an expert bank.

        Raises:
            ValueError: if only some parts are given, or shapes or ranks do not fit.

        """
        parts = dict(outer_A=outer_A, outer_B=outer_B, inner_A=inner_A, inner_B=inner_B)
        if not self._installs("a nested update", parts, "an expert bank", self.router is not None):
            self._clear_nested()
            return
        assert outer_A is not None and outer_B is not None
        assert inner_A is not None and inner_B is not None
        check_nested(self.d_out, self.d_in, self.rank, (outer_A, outer_B, inner_A, inner_B))
        self.outer_A = outer_A.detach().clone().float()
        self.outer_B = outer_B.detach().clone().float()
        self.inner_A = nn.Parameter(inner_A.detach().clone().float())
        self.inner_B = nn.Parameter(inner_B.detach().clone().float())

    def _installs(
        self, what: str, parts: dict[str, torch.Tensor | None], other: str, other_on: bool
    ) -> bool:
        """Return True to install extension ``what`` from ``parts``, False (all None) to remove it.

        Raises:
            ValueError: if only some parts are given, or the pair is missing or has ``lora_C``,
                a rank mask or the ``other`` extension.

        """
        given = [p is not None for p in parts.values()]
        if not any(given):
            return False
        if not all(given):
            *names, last = parts
            raise ValueError(f"{', '.join(names)} and {last} go together")
        if self.lora_A is None or self.lora_C is not None or self.rank_mask is not None or other_on:
            raise ValueError(
                f"{what} needs the pair (lora_A, lora_B) installed first, "
                f"without lora_C, a rank mask or {other}"
            )
        return True

    def _clear_nested(self) -> None:
        self.inner_A = self.inner_B = None
        self.outer_A = self.outer_B = None

    def expert_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Return the gates ``g (..., K + 1)`` of features-last ``x (..., d_in)`` (bank, then pair).

        ``softmax`` over the router's ``n`` outputs, top ``K + 1`` kept and renormalised, each
        kept weight added to the expert its output maps to (module docstring).
        """
        assert self.router is not None and self.expert_map is not None
        probs = torch.softmax(F.linear(x, self.router), dim=-1)  # (..., d_in) -> (..., n)
        top, idx = probs.topk(self.num_experts, dim=-1)  # (..., K + 1)
        top = top / top.sum(dim=-1, keepdim=True)
        experts = self.expert_map.to(idx.device)[idx]  # (..., K + 1) expert of each kept output
        gates = torch.zeros(top.shape, dtype=top.dtype, device=top.device)
        return gates.scatter_add(-1, experts, top)

    @property
    def num_experts(self) -> int:
        """Return ``K + 1`` (the bank and the live pair), 0 without a bank."""
        return 0 if self.experts_A is None else int(self.experts_A.shape[0]) + 1

    def _routed(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``Σ_e s_e g_e B_e A_e drop(x)`` (the routed mixture, module docstring)."""
        assert self.lora_A is not None and self.lora_B is not None
        assert self.experts_A is not None and self.experts_B is not None
        conv = self.kind == "conv1x1"
        xs = x.movedim(1, -1) if conv else x  # (..., d_in), features last
        gates = self.expert_gates(xs)  # (..., K + 1)
        h = self.dropout(xs)  # (..., d_in)
        own = F.linear(F.linear(h, self.lora_A), self.lora_B)  # (..., r) -> (..., d_out)
        out = self.scaling * gates[..., -1:] * own  # (..., d_out)
        if self.experts_A.shape[0] > 0:
            hb = torch.einsum("...i,kri->...kr", h, self.experts_A)  # (..., K, r_b)
            yb = torch.einsum("...kr,kor->...ko", hb, self.experts_B)  # (..., K, d_out)
            bank_scaling = self.spec.scale(int(self.experts_A.shape[1]))  # s(r_b)
            out = out + bank_scaling * (gates[..., :-1, None] * yb).sum(dim=-2)  # (..., d_out)
        return out.movedim(-1, 1) if conv else out

    def set_experts(
        self,
        experts_A: torch.Tensor | None,
        experts_B: torch.Tensor | None,
        router: torch.Tensor | None,
        expert_map: torch.Tensor | None,
    ) -> None:
        """Install a frozen expert bank with its router and map (copied), or remove it (all None).

        Needs the live pair installed first (``set_adapter``, which removes any bank), without
        ``lora_C``, a rank mask or a nested update; the live pair is expert ``K``. The bank's
        rank ``r_b`` may differ from the pair's; each is applied at the scaling of its own rank.

        Raises:
            ValueError: if only some parts are given, or shapes, ranks or map values do not fit.

        """
        parts = dict(experts_A=experts_A, experts_B=experts_B, router=router, expert_map=expert_map)
        if not self._installs("an expert bank", parts, "a nested update", self.outer_A is not None):
            self._clear_experts()
            return
        assert experts_A is not None and experts_B is not None
        assert router is not None and expert_map is not None
        check_experts(self.d_out, self.d_in, (experts_A, experts_B), router, expert_map)
        self.experts_A = experts_A.detach().clone().float()
        self.experts_B = experts_B.detach().clone().float()
        self.router = nn.Parameter(router.detach().clone().float())
        self.expert_map = expert_map.detach().clone().long()

    def _clear_experts(self) -> None:
        self.router = None
        self.experts_A = self.experts_B = self.expert_map = None

    def set_adapter(
        self,
        A: torch.Tensor | None,
        B: torch.Tensor | None,
        C: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Install factors (copied into fresh parameters) or remove them with ``None``.

        Any expert bank or nested update is removed (``set_experts``/``set_nested`` install one
        on top of the new pair).

        Raises:
            ValueError: if shapes do not fit the layer or the rank exceeds ``min(d_in, d_out)``.

        """
        if (A is None) != (B is None):
            raise ValueError("lora_A and lora_B must be installed together")
        if A is not None and B is not None:
            check_pair(self.d_out, self.d_in, A, B, C)
        self.lora_A = None if A is None else nn.Parameter(A.detach().clone().float())
        self.lora_B = None if B is None else nn.Parameter(B.detach().clone().float())
        self.lora_C = None if C is None else nn.Parameter(C.detach().clone().float())
        self.rank_mask = None if mask is None else mask.detach().clone().float()
        self._clear_experts()
        self._clear_nested()

    def set_residual(self, residual: torch.Tensor | None) -> None:
        """Install a dense ``(d_out, d_in)`` delta added to the base, or remove it."""
        if residual is not None and residual.shape != (self.d_out, self.d_in):
            raise ValueError(
                f"residual must be ({self.d_out}, {self.d_in}), got {tuple(residual.shape)}"
            )
        self.residual = None if residual is None else residual.detach().clone().float()

    def delta_weight(self) -> torch.Tensor:
        """Return the dense change this adapter applies: ``R + s·B C A`` ``(d_out, d_in)``.

        Raises:
            ValueError: with an expert bank, whose change depends on the input.

        """
        if self.router is not None:
            raise ValueError("a routed expert mixture has no input-independent dense delta")
        delta = torch.zeros(self.d_out, self.d_in)
        if self.residual is not None:
            delta = delta + self.residual
        if self.lora_A is not None and self.lora_B is not None:
            A, B = self.effective_factors()
            mid = A if self.lora_C is None else self.lora_C @ A  # (r, d_in)
            if self.rank_mask is not None:
                mid = self.rank_mask[:, None] * mid
            delta = delta + self.scaling * (B @ mid)  # (d_out, d_in)
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
