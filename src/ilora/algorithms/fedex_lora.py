"""FedEx-LoRA: FedAvg of A and B plus the exact residual added to the frozen weights.

Singhal, Ponkshe, Vepakomma, "FedEx-LoRA: Exact Aggregation for Federated and Efficient
Fine-Tuning of Large Language Models", ACL 2025, arXiv 2410.09432.

FedIT's averages ``Ā = Σ p_k A_k``, ``B̄ = Σ p_k B_k`` miss the cross terms of the products;
FedEx-LoRA adds exactly what is missing to the frozen weights every round:
``R ← R + Σ_k p_k s B_k A_k − s B̄Ā`` ``(d_out, d_in)``, so the next global model
``W0 + R + s B̄Ā`` equals ``W0 + R_old + Σ p_k s B_k A_k`` (exact). The adapter ``(Ā, B̄)``
keeps training (no re-init). Hooks: ``server_init`` the standard LoRA init (seeded, one for all
clients), zero residuals and the head; ``download`` Ā, B̄, R and the head; ``client_init``
installs R under the factors; default ``upload`` (A_k, B_k, head); ``aggregate`` the averages,
the residual and the head's FedAvg; ``export`` the factors, R and the head.

Choices where the sources are silent or differ:

* Orientation: ``W (d_out, d_in) += R`` with ``R`` in ``nn.Linear`` layout. The released code
  adds ``transpose(R)``, right only for GPT-2's ``Conv1D`` (weight stored in×out) and silently
  wrong for square ``nn.Linear`` (RoBERTa q/v); our layers hold every residual as
  ``(d_out, d_in)``, so one orientation serves all layer kinds.
* Weights ``p_k`` (the code averages uniformly: ``fed.weighting: uniform``).
* Download: the dense ``R`` (``d_out·d_in``), not the ``K`` client factor pairs the paper also
  allows: a client that missed rounds needs the accumulated ``R`` anyway.
* ``R`` is float32, updated in float64 from the stored float32 ``Ā, B̄``, so ``agg_error`` is
  one float32 rounding of ``R`` (~1e-7: exact).

Heterogeneous ranks (our extension; the paper is homogeneous). The global factors live at
``r_max`` (zero-padded FedAvg, as FedIT) with the global model ``W0 + R + s(r_max) B̄Ā``. A
client of rank ``r_k`` receives the leading ``r_k`` components ``(B̄_k, Ā_k)`` and its own
residual ``R_k = R + s(r_max) B̄Ā − s(r_k) B̄_k Ā_k``, so it starts from exactly the global
model. The server sets the new global model to the weighted mean of the clients' trained models:
``R' = Σ p_k (R_k + s(r_k) B_k A_k) − s(r_max) B̄'Ā'``, which is still exact. With one rank
``R_k = R`` and this is the paper's rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._pair_servers import ResidualServer
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import dense_agg_error
from ilora.algorithms._shared import ideal_stack
from ilora.algorithms._shared import mean_extras
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms._shared import rank_of
from ilora.algorithms._shared import truncated
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import resize_rank
from ilora.tensors import weighted_mean
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch


@register("fedex-lora")
@dataclass(frozen=True)
class FedExLoRA(ResidualServer):
    """FedEx-LoRA (see the module docstring). No hyperparameters.

    State: :class:`~._pair_servers.ResidualServer`'s. Bytes per client per round, float32, per
    adapted layer ``(d_out, d_in)`` at the client's rank ``r``: download
    ``4·(r·(d_out + d_in) + d_out·d_in)`` (B̄, Ā and the dense residual), upload
    ``4·r·(d_out + d_in)`` (B and A); plus ``4·n_head`` each way for the head's ``n_head`` floats.
    """

    heterogeneous_ranks = True

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        tensors = truncated(state.tensors, client.rank)
        if client.rank == state.rank:
            return Payload(tensors)
        for m in keys.modules(keys.of_kind(tensors, "residual")):
            k = keys.make(m, "residual")
            tensors[k] = _client_residual(state, m, client.rank).float()
        return Payload(tensors)

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        import torch

        ups = [uploads[c] for c in sorted(uploads)]
        padded = [
            {
                k: resize_rank(v, state.rank, keys.kind_of(k))
                for k, v in keys.of_kind(u.tensors, "lora_A", "lora_B").items()
            }
            for u in ups
        ]
        mean = weighted_mean(padded, [u.weight for u in ups])
        p = normalized_weights(uploads)
        s = state.lora.scale(state.rank)
        residual: TensorDict = {}
        ideal: TensorDict = {}
        applied: TensorDict = {}
        for m in keys.modules(mean):
            k = keys.make(m, "residual")
            old = state.tensors[k].to(torch.float64)  # (d_out, d_in)
            B_s, A_s = ideal_stack(uploads, state.lora, m)  # (d_out, Kr), (Kr, d_in)
            # (d_out, Kr) @ (Kr, d_in) -> (d_out, d_in): Σ p_k (R_k − R + s_k B_k A_k)
            ideal[m] = B_s @ A_s + sum(
                p[c] * (_client_residual(state, m, rank_of(uploads[c].tensors, m)) - old)
                for c in sorted(uploads)
            )
            B = mean[keys.make(m, "lora_B")].to(torch.float64)  # (d_out, r)
            A = mean[keys.make(m, "lora_A")].to(torch.float64)  # (r, d_in)
            avg = s * (B @ A)  # (d_out, r) @ (r, d_in) -> (d_out, d_in)
            residual[k] = (old + ideal[m] - avg).float()
            applied[m] = residual[k].to(torch.float64) - old + avg
        metrics = {"agg_error": dense_agg_error(ideal, applied)}
        tensors = {**mean, **residual, **mean_extras(uploads)}
        return replace(state, tensors=tensors, metrics=metrics)


def _client_residual(state: FactorState, module: str, r: int) -> torch.Tensor:
    """Return ``R_k = R + s(r_max) B̄Ā − s(r) B̄_r Ā_r`` in float64 ``(d_out, d_in)``.

    The residual under which a rank-``r`` client's leading components reproduce the global
    model exactly; ``R`` itself when ``r`` is the global rank.
    """
    import torch

    R = state.tensors[keys.make(module, "residual")].to(torch.float64)  # (d_out, d_in)
    if r == state.rank:
        return R
    B = state.tensors[keys.make(module, "lora_B")].to(torch.float64)  # (d_out, r_max)
    A = state.tensors[keys.make(module, "lora_A")].to(torch.float64)  # (r_max, d_in)
    lora = state.lora
    # (d_out, r_max) @ (r_max, d_in) and (d_out, r) @ (r, d_in) -> (d_out, d_in)
    return R + lora.scale(state.rank) * (B @ A) - lora.scale(r) * (B[:, :r] @ A[:r])


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FedExLoRA)(traffic.pair_and_residual_down)  # + the residual down
