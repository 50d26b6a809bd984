"""LoRA-FAIR: FedAvg of A and B plus a server-side residual correction of B.

Bian, Wang, Zhang, Xu, "LoRA-FAIR: Federated LoRA Fine-Tuning with Aggregation and
Initialization Refinement", ICCV 2025, arXiv 2411.14961.

``aggregate``: ``Ā = Σ p_k A_k``, ``B̄ = Σ p_k B_k``, ideal ``ΔW* = Σ p_k s_k B_k A_k``; it keeps
Ā and corrects B by ``ΔB = argmin ‖T − (B̄ + ΔB)Ā‖_F² + λ‖ΔB‖_F²`` with ``T = ΔW*/s`` (``s`` the
global scaling: ``T = Σ p_k B_k A_k`` when all scalings agree, the paper's case), i.e. the ridge
closed form ``ΔB = R Āᵀ (ĀĀᵀ + λI)⁻¹``, ``R = T − B̄Ā``, computed in factor space. The paper's
similarity objective is not public; squared Frobenius with ``λ‖ΔB‖²`` and λ = 0.01 is the ILoRA
artifact's choice. ``download`` sends ``(Ā, B̄ + ΔB)`` and the head; clients train from it and
upload A, B and the head (default hooks); no re-init.

Mixed ranks (our extension; the paper is homogeneous): uploads are zero-padded to ``r_max``, the
correction is made at ``r_max`` and each client receives the leading ``r_k`` components; the
global model applies ``s(r_max)``. Scalings differ across ranks (``s = α/r``), and the
correction fits ``B̄'`` to ``ΔW*/s(r_max)``, so a rank-``r_k`` client applying its own ``s(r_k)``
to the truncated ``B̄'`` would start ``s(r_k)/s(r_max)`` times too far (8x for rank 2 of 16;
on the demo setting this made the global model collapse to 7.5% accuracy, below the majority
class). With ``rescale_b`` (default) the client receives ``(s(r_max)/s(r_k))·B̄'_k`` and its
upload ``B_k`` is mapped back by ``s(r_k)/s(r_max)`` before averaging, so every client starts
from exactly the truncation of the global model (the same mapping as FFA-LoRA's). The ILoRA
artifact's extension (no mapping) is ``rescale_b: false``. With one rank both are the paper.
``agg_error`` is ``‖ΔW* − s·B̄'Ā‖ / ‖ΔW*‖``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._pair_servers import PaddedPairServer
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import agg_error
from ilora.algorithms._shared import ideal_stack
from ilora.algorithms._shared import mean_extras
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import resize_rank
from ilora.tensors import weighted_mean
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch


@register("lora-fair")
@dataclass(frozen=True)
class LoRAFAIR(PaddedPairServer):
    """LoRA-FAIR (see the module docstring).

    Bytes per client per round, float32, per adapted layer ``(d_out, d_in)`` at the client's
    rank ``r``: download ``4·r·(d_out + d_in)`` (B̄' and Ā), upload ``4·r·(d_out + d_in)``;
    plus ``4·n_head`` each way for the head's ``n_head`` floats (as FedIT: "1×").
    """

    heterogeneous_ranks = True

    lam: float = hyperparameter(
        0.01, "code", "ridge weight λ of the B correction (ILoRA artifact: 0.01); 0 = none"
    )

    rescale_b: bool = hyperparameter(
        True,
        "ours",
        "mixed ranks (ours, the paper has one rank): map B by s(r_max)/s(r_k) down "
        "and back up so a client starts at the global model (false: the ILoRA artifact's "
        "extension)",
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        cids = sorted(uploads)
        padded = [self._padded(state, uploads[c].tensors) for c in cids]
        mean = weighted_mean(padded, [uploads[c].weight for c in cids])
        s = state.lora.scale(state.rank)
        new: TensorDict = {}
        ideal, applied = {}, {}
        for m in keys.modules(mean):
            kA, kB = keys.make(m, "lora_A"), keys.make(m, "lora_B")
            ideal[m] = ideal_stack(uploads, state.lora, m)  # B_c A_c = ΔW*
            B = mean[kB] + self._correction(mean[kB], mean[kA], ideal[m], s)
            new[kB], new[kA] = B.float().contiguous(), mean[kA]
            applied[m] = (new[kB], s * new[kA])  # what the global model applies
        metrics = {"agg_error": agg_error(ideal, applied)}
        return replace(state, tensors={**new, **mean_extras(uploads)}, metrics=metrics)

    def _b_ratio(self, state: FactorState, r: int) -> float:
        """Return ``s(r_max)/s(r)``, the factor B is sent with (1 without ``rescale_b``)."""
        return state.lora.scale(state.rank) / state.lora.scale(r) if self.rescale_b else 1.0

    def _padded(self, state: FactorState, tensors: TensorDict) -> TensorDict:
        """Return an upload's A and B zero-padded to ``r_max``, B mapped back to global scale."""
        out: TensorDict = {}
        for k, v in keys.of_kind(tensors, "lora_A", "lora_B").items():
            kind = keys.kind_of(k)
            r = v.shape[0] if kind == "lora_A" else v.shape[1]
            t = v / self._b_ratio(state, r) if kind == "lora_B" else v
            out[k] = resize_rank(t, state.rank, kind)
        return out

    def _correction(
        self,
        B_bar: torch.Tensor,
        A_bar: torch.Tensor,
        ideal: tuple[torch.Tensor, torch.Tensor],
        s: float,
    ) -> torch.Tensor:
        """Return ``ΔB = R Āᵀ (ĀĀᵀ + λI)⁺`` with ``R = B_c A_c / s − B̄Ā``, never forming R.

        The pseudo-inverse equals the inverse for ``λ > 0`` and gives the minimum-norm
        least-squares correction for ``λ = 0`` (a singular ``ĀĀᵀ``, e.g. zero-padded rows).
        """
        import torch

        B_c, A_c = ideal  # (d_out, Σr), (Σr, d_in), ΔW* = B_c A_c
        Bb, Ab = B_bar.to(torch.float64), A_bar.to(torch.float64)  # (d_out, r), (r, d_in)
        gram = Ab @ Ab.T  # (r, d_in) @ (d_in, r) -> (r, r)
        R_At = B_c @ (A_c @ Ab.T) / s - Bb @ gram  # (d_out, Σr) @ (Σr, r) - (d_out, r) @ (r, r)
        eye = torch.eye(gram.shape[0], dtype=torch.float64)
        inv: torch.Tensor = torch.linalg.pinv(gram + self.lam * eye, hermitian=True)  # (r, r)
        return R_At @ inv  # (d_out, r) @ (r, r)


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(LoRAFAIR)(traffic.pair_both_ways)  # B, A at r_k and the head
