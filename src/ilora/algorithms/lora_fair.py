"""LoRA-FAIR: FedAvg of A and B plus a server-side residual correction of B.

Bian, Wang, Zhang, Xu, "LoRA-FAIR: Federated LoRA Fine-Tuning with Aggregation and
Initialization Refinement", ICCV 2025, arXiv 2411.14961.

``aggregate``: ``Ā = Σ p_k A_k``, ``B̄ = Σ p_k B_k``, ideal ``ΔW* = Σ p_k s_k B_k A_k``; it keeps
Ā and corrects B by ``ΔB = argmin ‖T − (B̄ + ΔB)Ā‖_F² + λ‖ΔB‖_F²`` with ``T = ΔW*/s`` (``s`` the
global scaling: ``T = Σ p_k B_k A_k`` when all scalings agree, the paper's case), i.e. the ridge
closed form ``ΔB = R Āᵀ (ĀĀᵀ + λI)⁻¹``, ``R = T − B̄Ā``, computed in factor space. The paper's
similarity objective is not public; squared Frobenius with ``λ‖ΔB‖²`` and λ = 0.01 is the ILoRA
artifact's choice. ``download`` sends ``(Ā, B̄ + ΔB)`` and the head; clients train from it and
upload A, B and the head (default hooks); no re-init. Mixed ranks (our extension, as the ILoRA
artifact): uploads are zero-padded to ``r_max``, the correction is made at ``r_max`` and each
client receives the leading ``r_k`` components; the global model applies ``s(r_max)``.
``agg_error`` is ``‖ΔW* − s·B̄'Ā‖ / ‖ΔW*‖``; never above FedIT's on the same uploads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from ilora.algorithms._shared import (
    FactorState,
    agg_error,
    global_factor_state,
    ideal_stack,
    mean_extras,
    truncated,
)
from ilora.algorithms.base import Algorithm, register
from ilora.lora import keys
from ilora.lora.linalg import resize_rank
from ilora.lora.spec import LoRASpec
from ilora.tensors import weighted_mean
from ilora.types import ClientInfo, LocalSetup, Payload, RoundInfo, TensorDict, Upload


@register("lora-fair")
@dataclass(frozen=True)
class LoRAFAIR(Algorithm[FactorState]):
    """LoRA-FAIR (see the module docstring).

    Bytes per client per round, float32, per adapted layer ``(d_out, d_in)`` at the client's
    rank ``r``: download ``4·r·(d_out + d_in)`` (B̄' and Ā), upload ``4·r·(d_out + d_in)``;
    plus ``4·n_head`` each way for the head's ``n_head`` floats (as FedIT: "1×").
    """

    heterogeneous_ranks = True

    lam: float = field(
        default=0.01,
        metadata={"help": "ridge weight λ of the B correction (ILoRA artifact: 0.01); 0 = none"},
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        return global_factor_state(template, clients, lora, seed)

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        return Payload(truncated(state.tensors, client.rank))

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        cids = sorted(uploads)
        padded = [
            {
                k: resize_rank(v, state.rank, keys.kind_of(k))
                for k, v in keys.of_kind(uploads[c].tensors, "lora_A", "lora_B").items()
            }
            for c in cids
        ]
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

    def export(self, state: FactorState) -> LocalSetup:
        return LocalSetup(factors=dict(state.tensors))

    def round_metrics(self, state: FactorState) -> dict[str, float]:
        return dict(state.metrics)

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
        B_c, A_c = ideal  # (d_out, Σr), (Σr, d_in), ΔW* = B_c A_c
        Bb, Ab = B_bar.to(torch.float64), A_bar.to(torch.float64)  # (d_out, r), (r, d_in)
        gram = Ab @ Ab.T  # (r, d_in) @ (d_in, r) -> (r, r)
        R_At = B_c @ (A_c @ Ab.T) / s - Bb @ gram  # (d_out, Σr) @ (Σr, r) - (d_out, r) @ (r, r)
        eye = torch.eye(gram.shape[0], dtype=torch.float64)
        inv: torch.Tensor = torch.linalg.pinv(gram + self.lam * eye, hermitian=True)  # (r, r)
        return R_At @ inv  # (d_out, r) @ (r, r)
