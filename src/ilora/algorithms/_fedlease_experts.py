"""FedLEASE's expert tensors: a client's routed layers and the experts' per-component means.

Pure functions over ``dict[str, Tensor]`` used by ``fedlease.py`` (its module docstring has the
method and the heterogeneous-rank rules). Shapes per adapted layer ``(d_out, d_in)``: expert
banks ``experts_A (M, R, d_in)`` / ``experts_B (M, d_out, R)`` at the largest rank ``R``,
a router ``(2M−1, d_in)``; a client's own pair at its rank ``r_k``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._shared import componentwise_mean
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.types import TensorDict

if TYPE_CHECKING:
    import torch


def expert_map(own: int, num_experts: int) -> torch.Tensor:
    """Return ``π (2M−1,)``: router output → layer expert slot for a client of cluster ``own``.

    The layer holds the ``M − 1`` other experts in cluster order as its frozen bank (slots
    ``0..M−2``) and the own expert as its live pair (slot ``M − 1``). Outputs ``j < M`` select
    expert ``j``; outputs ``M..2M−2`` select the own expert.
    """
    import torch

    M = num_experts
    slots = []
    for j in range(2 * M - 1):
        m = j if j < M else own
        slots.append(M - 1 if m == own else (m if m < own else m - 1))
    return torch.tensor(slots, dtype=torch.int64)


def expert_layer_setup(
    payload: Mapping[str, torch.Tensor], own: int, rank: int, lora: LoRASpec
) -> TensorDict:
    """Return the layer tensors of a rank-``rank`` client of cluster ``own`` from its payload.

    Per module: ``lora_A``/``lora_B`` = expert ``own`` cut to its leading ``r_k = rank``
    components, A lifted by ``s(R)/s(r_k)`` so the pair applies ``s(R) B A`` at ``s(r_k)``
    (trained); ``experts_A``/``experts_B`` = the other experts whole at ``R`` (frozen, applied at
    ``s(R)`` by the layer); ``router`` and ``expert_map``.
    """
    out: TensorDict = {}
    for module in keys.modules(payload):
        EA = payload[keys.make(module, "experts_A")]  # (M, R, d_in)
        EB = payload[keys.make(module, "experts_B")]  # (M, d_out, R)
        M, R = int(EA.shape[0]), int(EA.shape[1])
        lift = lora.scale(R) / lora.scale(rank)  # S / s_k, 1 when r_k = R
        others = [m for m in range(M) if m != own]
        out[keys.make(module, "lora_A")] = lift * EA[own, :rank]  # (r_k, d_in)
        out[keys.make(module, "lora_B")] = EB[own, :, :rank].contiguous()  # (d_out, r_k)
        out[keys.make(module, "experts_A")] = EA[others].contiguous()  # (M−1, R, d_in)
        out[keys.make(module, "experts_B")] = EB[others].contiguous()  # (M−1, d_out, R)
        out[keys.make(module, "router")] = payload[keys.make(module, "router")].clone()
        out[keys.make(module, "expert_map")] = expert_map(own, M)
    return out


def expert_units(lora: LoRASpec, rank: int, factors: Mapping[str, torch.Tensor]) -> TensorDict:
    """Return a client's LoRA in expert units: ``A_k · s(r_k)/s(rank)``, B as it is.

    Then ``s(rank) B_k A_k`` is the client's update ``s(r_k) B_k A_k``; other entries are dropped.
    """
    out = dict(keys.of_kind(factors, "lora_B"))
    for key, A in keys.of_kind(factors, "lora_A").items():
        out[key] = (lora.scale(int(A.shape[0])) / lora.scale(rank)) * A  # (r_k, d_in)
    return out


def expert_pairs(
    old: Mapping[str, torch.Tensor], uploads: Sequence[TensorDict], weights: Sequence[float]
) -> TensorDict:
    """Return ``old`` A/B (at ``R``, expert units) averaged per component over ``uploads``."""
    return {
        key: componentwise_mean(t, keys.kind_of(key), [u[key] for u in uploads], weights)
        for key, t in keys.of_kind(old, "lora_A", "lora_B").items()
    }


# ---- bytes per client per round, float32 floats (down, up): FedLEASE's traffic formula
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """Depends on the round and on the chosen number of experts ``M``.

    First contact (any round): the initial LoRA at ``r_k`` and head down, the LoRA up; later
    warm-up rounds nothing down, the LoRA up; afterwards all ``M`` experts at ``r_max`` and the
    cluster's router ``(2M−1, d_in)`` down, the own expert at ``r_k`` and the router up. ``hp``:
    ``warmup_rounds`` (default 5) and ``num_experts`` ``M`` (chosen by the silhouette search on
    the warm-up LoRAs; default ``M_max = 4``).
    """
    lora = s.pair(c.rank)
    if c.first:
        return lora + s.n_head, lora
    if c.round <= c.hp.get("warmup_rounds", 5):
        return 0, lora
    experts = int(c.hp.get("num_experts", 4))
    router = (2 * experts - 1) * sum(d_in for _, d_in in s.layers)
    bank = experts * s.pair(max(c.max_rank, c.rank))  # every expert at r_max
    return bank + router, lora + router
