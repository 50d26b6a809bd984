"""FlexLoRA: aggregate the full-size update, send each client its best rank-r_k factors.

Bai, Chen, Qian, Yao, Li, "Federated Fine-tuning of LLMs under Heterogeneous Tasks and Client
Resources", NeurIPS 2024, arXiv 2402.11505.

``aggregate`` forms ``ΔW = Σ p_k s_k B_k A_k`` (scalings folded in, so mixed ranks/alphas are
exact) and its SVD ``U S Vᵀ`` in factor space (``svd_of_product``: QR of the stacked factors,
never the dense ``(d_out, d_in)``; ``dense: true`` forms it and calls ``torch.linalg.svd``, a
reference), keeping the top ``r_max`` components as ``B = U√S``, ``A = √S Vᵀ`` (the ILoRA
artifact's split of Σ; the paper's brief puts Σ on B, the product is the same). ``download``
sends client ``j`` the leading ``r_j`` of them with ``1/s_j`` on A (Eckart–Young: the best
rank-``r_j`` approximation of ΔW), and the head. Components the aggregate lacks (round 1, when
ΔW = 0, or fewer than ``r_j`` singular values above ``RANK_TOL·σ_1``) take the standard LoRA init
at rank ``r_j`` (seeded A rows shared by all clients, zero B columns): the product is unchanged
and they stay trainable (an SVD of zero gives B = A = 0, which never trains). Clients train from
the payload and upload A, B and the head (default hooks). The global model is the rank-``r_max``
factors; ``agg_error`` is their Eckart–Young tail ``sqrt(Σ_{i>q} σ_i² / Σ σ_i²)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._shared import ideal_stack
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import mean_extras
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import pad_rank
from ilora.lora.linalg import svd_of_product
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

RANK_TOL = 1e-6  # σ_i ≤ RANK_TOL·σ_1 counts as zero (float64 Gram eigenvalues resolve ~1e-8)


@dataclass(frozen=True)
class FlexLoRAState:
    """FlexLoRA's server state.

    ``factors``: the aggregate's top ``rank`` (= r_max) components ``B = U√S``, ``A = √S Vᵀ``
    with the scalings folded in (``B A ≈ ΔW``; zeros before the first aggregation);
    ``support``: per module, how many of them are non-zero; ``init``: the standard LoRA init
    at each client rank (round 1 and missing components); ``head``: the FedAvg-ed head.
    """

    factors: TensorDict
    support: dict[str, int]
    init: dict[int, TensorDict]
    head: TensorDict
    lora: LoRASpec
    rank: int
    metrics: dict[str, float] = field(default_factory=dict)


@register("flexlora")
@dataclass(frozen=True)
class FlexLoRA(Algorithm[FlexLoRAState]):
    """FlexLoRA (see the module docstring).

    Bytes per client per round, float32, per adapted layer ``(d_out, d_in)`` at the client's
    rank ``r``: download ``4·r·(d_out + d_in)`` (B and A), upload ``4·r·(d_out + d_in)``; plus
    ``4·n_head`` each way for the head's ``n_head`` floats.
    """

    heterogeneous_ranks = True

    dense: bool = hyperparameter(
        False, "engine", "form the dense ΔW and use torch.linalg.svd (a reference; slow)"
    )

    def __post_init__(self) -> None:
        if not isinstance(self.dense, bool):
            raise ValueError(f"dense must be a bool (true or false), got {self.dense!r}")

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FlexLoRAState:
        import torch

        r = max_rank(clients)
        ranks = sorted({c.rank for c in clients})
        init = {k: init_factors(template, k, lora, seed, "lora-init") for k in ranks}
        zeros = {k: torch.zeros_like(v) for k, v in init[r].items()}
        head = {k: v.clone() for k, v in keys.of_kind(template, "param").items()}
        support = dict.fromkeys(keys.modules(zeros), 0)
        return FlexLoRAState(zeros, support, init, head, lora, r)

    def download(self, state: FlexLoRAState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        import torch

        r, s = client.rank, state.lora.scale(client.rank)
        out = dict(state.init[r])  # standard LoRA init at rank r: A random, B = 0
        for m, support in state.support.items():
            q = min(support, r)  # components q..r keep the init: trainable, product unchanged
            kA, kB = keys.make(m, "lora_A"), keys.make(m, "lora_B")
            B, A = state.factors[kB], state.factors[kA]
            out[kB] = torch.cat([B[:, :q], out[kB][:, q:]], dim=1).contiguous()  # (d_out, r)
            out[kA] = torch.cat([A[:q] / s, out[kA][q:]], dim=0).contiguous()  # (r, d_in)
        return Payload({**out, **state.head})

    def aggregate(
        self, state: FlexLoRAState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FlexLoRAState:
        factors: TensorDict = {}
        support: dict[str, int] = {}
        tail = total = 0.0
        for m in state.support:
            B_c, A_c = ideal_stack(uploads, state.lora, m)  # (d_out, Σr), (Σr, d_in)
            U, S, Vh = self._svd(B_c, A_c)  # (d_out, n), (n,), (n, d_in)
            q = _support(S, state.rank)
            root = S[:q].sqrt()  # (q,)
            B = pad_rank(U[:, :q] * root, state.rank, "lora_B")  # (d_out, r_max)
            A = pad_rank(root[:, None] * Vh[:q], state.rank, "lora_A")  # (r_max, d_in)
            factors[keys.make(m, "lora_B")] = B.float().contiguous()  # SVD's U is column-major
            factors[keys.make(m, "lora_A")] = A.float().contiguous()
            support[m] = q
            sq = S.square()  # Eckart–Young: the dropped σ_i² are the error
            tail, total = tail + float(sq[q:].sum()), total + float(sq.sum())
        metrics = {"agg_error": math.sqrt(tail / total) if total > 0 else 0.0}
        return replace(
            state, factors=factors, support=support, head=mean_extras(uploads), metrics=metrics
        )

    def export(self, state: FlexLoRAState) -> LocalSetup:
        s = state.lora.scale(state.rank)  # the global model applies s(r_max)
        factors = {
            k: (v / s).contiguous() if keys.kind_of(k) == "lora_A" else v
            for k, v in state.factors.items()
        }
        return LocalSetup(factors={**factors, **state.head})

    def _svd(
        self, B_c: torch.Tensor, A_c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the thin SVD ``U, S, Vh`` of ``B_c A_c`` (float64, S descending)."""
        import torch

        if not self.dense:
            return svd_of_product(B_c, A_c)  # (d_out, n), (n,), (n, d_in); n = min(d_out, Σr)
        dW = B_c @ A_c  # (d_out, Σr) @ (Σr, d_in) -> (d_out, d_in): formed on purpose
        U, S, Vh = torch.linalg.svd(dW, full_matrices=False)  # n = min(d_out, d_in)
        return U, S, Vh


def _support(S: torch.Tensor, r: int) -> int:
    """Return how many of the leading ``r`` singular values exceed ``RANK_TOL·σ_1``."""
    if S.numel() == 0 or float(S[0]) <= 0:
        return 0
    return int((S[:r] > RANK_TOL * S[0]).sum())


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FlexLoRA)(traffic.pair_both_ways)  # B, A at r_k and the head
