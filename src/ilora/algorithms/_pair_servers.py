"""Server hooks of the methods that keep one global pair ``(B, A)`` at ``r_max`` (FedIT's).

FedIT, FedLoRU and pFedLoRU send each client the global factors cut to its rank (B rescaled to
the global scale with ``rescale_b``) and read uploads zero-padded back to ``r_max``; FedLoRU and
pFedLoRU (whose server is FedLoRU's) add a merged residual every ``tau`` rounds. The math is in
``_shared`` and ``_merging``; these classes only wire it to the hooks. Shapes per adapted layer
``(d_out, d_in)``: ``lora_B (d_out, r)``, ``lora_A (r, d_in)``, ``residual (d_out, d_in)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ilora.algorithms._merging import merging_aggregate, merging_state
from ilora.algorithms._shared import (
    FactorState,
    b_to_global,
    rank_download,
    split_residual,
    truncated,
)
from ilora.algorithms.base import Algorithm
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo, LocalSetup, Payload, RoundInfo, TensorDict, Upload


class PaddedPairServer(Algorithm[FactorState]):
    """``download`` the global pair cut to the client's rank; ``lift`` an upload back to ``r_max``.

    A subclass declares the dataclass field ``rescale_b`` (help ``RESCALE_HELP``).
    """

    rescale_b: bool

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        out = truncated(state.tensors, client.rank)
        return rank_download(out, state.lora, state.rank, client.rank, self.rescale_b)

    def lift(self, state: FactorState, tensors: TensorDict) -> TensorDict:
        mapped = b_to_global(tensors, state.lora, state.rank) if self.rescale_b else tensors
        return truncated(mapped, state.rank)


class MergingServer(PaddedPairServer):
    """FedLoRU's server: the padded pair plus a residual ``R ← R + s B A`` every ``tau`` rounds.

    A subclass declares the dataclass fields ``tau`` and ``rescale_b``.
    """

    tau: int

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        return merging_state(template, clients, lora, seed)

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        return merging_aggregate(state, uploads, rnd, self.tau, self.rescale_b)

    def export(self, state: FactorState) -> LocalSetup:
        return split_residual(state.tensors)
