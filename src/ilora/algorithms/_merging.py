"""FedLoRU's server: global factors averaged zero-padded, merged into a residual every ``tau``.

Pure functions over ``FactorState`` shared by FedLoRU, pFedLoRU (its server is FedLoRU's) and
mFedLoRU (its own mean, the same merging). Shapes per adapted layer ``(d_out, d_in)`` at the
global rank ``r``: ``lora_B (d_out, r)``, ``lora_A (r, d_in)``, ``residual (d_out, d_in)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import global_factor_state
from ilora.algorithms._shared import global_pair_error
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import padded_mean
from ilora.algorithms._shared import uploads_to_global
from ilora.algorithms._shared import zero_residuals
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

MERGE_HELP = (
    "merge s·B·A into the residual and restart the factors every tau rounds (FedLoRU's paper: "
    "50 of 400; ours: 5, scaled to this project's shorter runs); 0 = never"
)
"""The help of FedLoRU's and mFedLoRU's ``tau`` (pFedLoRU's names its global branch)."""


def merge_and_restart(
    tensors: Mapping[str, torch.Tensor], lora: LoRASpec, r: int, *seed: object
) -> TensorDict:
    """Return ``tensors`` with ``R ← R + s(r) B A`` per layer and the factors restarted.

    FedLoRU's accumulation (ReLoRA's merge): the rank-``r`` product moves into the dense
    ``<module>.residual``, then A is a fresh standard init drawn from ``init_factors(..., *seed)``
    and B = 0, so the model ``W0 + R + s B A`` is unchanged (up to the float32 rounding of R).
    ``R`` is updated in float64; other entries (the head) are returned as they are.
    """
    import torch

    out = dict(tensors)
    residuals = keys.of_kind(tensors, "residual")
    shapes = {
        keys.make(m, "base"): residuals[keys.make(m, "residual")] for m in keys.modules(residuals)
    }
    s = lora.scale(r)
    for m in keys.modules(residuals):
        B = tensors[keys.make(m, "lora_B")].to(torch.float64)  # (d_out, r)
        A = tensors[keys.make(m, "lora_A")].to(torch.float64)  # (r, d_in)
        R = tensors[keys.make(m, "residual")].to(torch.float64)  # (d_out, d_in)
        out[keys.make(m, "residual")] = (R + s * (B @ A)).float()  # (d_out, r) @ (r, d_in)
    out.update(init_factors(shapes, r, lora, *seed))  # init reads only the shapes
    return out


def merging_state(
    template: Mapping[str, torch.Tensor], clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
) -> FactorState:
    """Return :func:`global_factor_state` plus a zero merged residual per layer (FedLoRU)."""
    state = global_factor_state(template, clients, lora, seed)
    return replace(state, tensors={**state.tensors, **zero_residuals(template)})


def install_round(
    state: FactorState, mean: TensorDict, metrics: dict[str, float], rnd: RoundInfo, tau: int
) -> FactorState:
    """Return ``state`` with the round's averaged factors and head, merged every ``tau`` rounds.

    FedLoRU's server step after averaging: when ``round % tau == 0`` (``tau > 0``) the product
    moves into the residual and the factors restart (:func:`merge_and_restart`).
    """
    tensors = {**state.tensors, **mean}
    if tau and rnd.round % tau == 0:
        tensors = merge_and_restart(
            tensors, state.lora, state.rank, rnd.seed, "fedloru-restart", rnd.round
        )
    return replace(state, tensors=tensors, metrics=metrics)


def merging_aggregate(
    state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo, tau: int, rescale_b: bool
) -> FactorState:
    """Return FedLoRU's next state: the zero-padded mean of the uploads, merged every ``tau``.

    With ``rescale_b`` the uploads' B are first mapped to the global scale
    (:func:`uploads_to_global`); ``agg_error`` compares the mean with the clients' products.
    """
    mapped = uploads_to_global(uploads, state.lora, state.rank) if rescale_b else uploads
    mean = padded_mean(mapped, state.rank)
    metrics = {"agg_error": global_pair_error(state, uploads, mean)}
    return install_round(state, mean, metrics, rnd, tau)
