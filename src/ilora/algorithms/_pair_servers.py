"""Server hooks of the methods that keep one global pair ``(B, A)`` at ``r_max`` (FedIT's).

Each class only wires math from ``_shared`` and ``_merging`` to hooks; the methods' papers,
math and choices stay in their own modules. Shapes per adapted layer ``(d_out, d_in)`` at the
global rank ``r``: ``lora_B (d_out, r)``, ``lora_A (r, d_in)``, ``residual (d_out, d_in)``.

* :class:`GlobalPairServer`: one standard LoRA init at ``r_max`` (seed purpose ``lora-init``),
  sent and exported as it is (centralized; HetLoRA sends its own cut).
* :class:`PaddedPairServer`: also sends each client the global pair cut to its rank (B rescaled
  with ``rescale_b``) and lifts uploads zero-padded back to ``r_max`` (FedIT, LoRA-FAIR).
* :class:`ResidualServer`: also a dense residual ``R = 0``, installed under the trainable
  factors on clients and in the export (FedEx-LoRA, mFedLoRU).
* :class:`MergingServer`: FedLoRU's server, the padded pair plus ``R ← R + s B A`` every ``tau``
  rounds (FedLoRU, pFedLoRU).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from ilora.algorithms._merging import merging_aggregate
from ilora.algorithms._merging import merging_state
from ilora.algorithms._shared import RESCALE_HELP
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import b_to_global
from ilora.algorithms._shared import global_factor_state
from ilora.algorithms._shared import rank_download
from ilora.algorithms._shared import split_residual
from ilora.algorithms._shared import truncated
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import hyperparameter
from ilora.lora.spec import LoRASpec
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload


class GlobalPairServer(Algorithm[FactorState]):
    """``server_init`` one standard LoRA init at ``r_max``; ``download``, ``export`` it as is."""

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        return global_factor_state(template, clients, lora, seed)

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        return Payload(dict(state.tensors))

    def export(self, state: FactorState) -> LocalSetup:
        return LocalSetup(factors=dict(state.tensors))


@dataclass(frozen=True)
class PaddedPairServer(GlobalPairServer):
    """``download`` the global pair cut to the client's rank; ``lift`` an upload back to ``r_max``.

    Both read the hyperparameter ``rescale_b``, declared here: its subclasses inherit it (LoRA-FAIR
    declares it again with its own help), ahead of their own fields.
    """

    rescale_b: bool = hyperparameter(True, "ours", RESCALE_HELP)

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        out = truncated(state.tensors, client.rank)
        return rank_download(out, state.lora, state.rank, client.rank, self.rescale_b)

    def lift(self, state: FactorState, tensors: TensorDict) -> TensorDict:
        mapped = b_to_global(tensors, state.lora, state.rank) if self.rescale_b else tensors
        return truncated(mapped, state.rank)


class ResidualServer(GlobalPairServer):
    """The global pair plus a zero dense residual per layer, installed under the factors.

    State: ``FactorState`` with the global factors at ``rank`` (the largest client rank), the
    residuals ``<module>.residual`` (merged ones, for the methods that merge) and the head.
    """

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        return merging_state(template, clients, lora, seed)

    def export(self, state: FactorState) -> LocalSetup:
        return split_residual(state.tensors)

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        return split_residual(ctx.payload.tensors), cstate


class MergingServer(ResidualServer, PaddedPairServer):
    """FedLoRU's server: the padded pair plus a residual ``R ← R + s B A`` every ``tau`` rounds.

    A subclass declares the dataclass field ``tau`` (``rescale_b``: :class:`PaddedPairServer`'s).
    """

    tau: int

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        return merging_aggregate(state, uploads, rnd, self.tau, self.rescale_b)
