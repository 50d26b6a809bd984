"""FLoRA: stack the clients' adapters, merge the exact sum into the base, restart LoRA each round.

Wang, Shen, He, Sun, Wang, Lyu, Li, "FLoRA: Federated Fine-Tuning Large Language Models with
Heterogeneous Low-Rank Adaptations", NeurIPS 2024, arXiv 2409.05976.

Each round every client trains a **fresh** LoRA at its own rank ``r_k`` (A random, B = 0) on top
of the merged base ``W0 + R``. The server stacks ``B_s = [B_1 … B_K]`` ``(d_out, Σr)`` and
``A_s = [p_1 s_1 A_1; …]`` ``(Σr, d_in)``, so ``B_s A_s = Σ p_k s_k B_k A_k`` exactly for any
mix of ranks, and merges it: ``R ← R + B_s A_s`` (one dense product per layer: the method). Hooks:
``server_init`` zero residuals; ``download`` ``R`` and the head; ``client_init`` a fresh LoRA
(A drawn from ``generator(seed, "flora-init", round, cid, module)``, B = 0) over ``R``; default
``upload`` (A_k, B_k, head); ``aggregate`` the merge and the head's FedAvg; ``export`` ``R`` and
the head, no factors (the global model is ``W0 + R``).

Choices where the sources are silent or differ:

* Scaling: ``s_k`` is folded into the stack (rows ``p_k s_k A_k``), so the merge is exact for any
  alpha. The paper's code puts only ``p_k`` on A and sets ``lora_alpha = 2·r_k`` for every client
  (``s = 2`` for all ranks); ``lora.alpha_scales_with_rank: true`` reproduces that choice (then
  ``s_k = α/rank`` for every rank and folding it changes nothing).
* Download: the paper's clients receive the stacked factors (rank ``Σ r_k``) and merge them
  themselves; we send the dense residual ``R`` ``(d_out, d_in)`` instead, the same model for a
  client that may have missed rounds, and clients keep no merged base (stateless clients).
* ``R`` is float32 in the server state, updated in float64; ``agg_error`` measures the change the
  float32 ``R`` really applies (a float32 rounding, ~1e-7: exact).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace

from ilora.algorithms import traffic
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import dense_agg_error
from ilora.algorithms._shared import head_of
from ilora.algorithms._shared import ideal_stack
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import mean_extras
from ilora.algorithms._shared import zero_residuals
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload


@register("flora")
@dataclass(frozen=True)
class FLoRA(Algorithm[FactorState]):
    """FLoRA (see the module docstring). No hyperparameters.

    State: ``FactorState`` whose tensors are the residuals ``<module>.residual`` and the head;
    ``rank`` is 0 (no global factors). Bytes per client per round, float32, per adapted layer
    ``(d_out, d_in)`` at the client's rank ``r``: download ``4·d_out·d_in`` (the dense residual),
    upload ``4·r·(d_out + d_in)`` (B and A); plus ``4·n_head`` each way for the head's ``n_head``
    floats.
    """

    heterogeneous_ranks = True

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        head = {k: v.clone() for k, v in head_of(template).items()}
        return FactorState({**zero_residuals(template), **head}, lora, rank=0)

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        return Payload(dict(state.tensors))

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        import torch

        old = keys.of_kind(state.tensors, "residual")
        new: TensorDict = {}
        ideal: TensorDict = {}
        applied: TensorDict = {}
        for m in keys.modules(old):
            k = keys.make(m, "residual")
            B_s, A_s = ideal_stack(uploads, state.lora, m)  # (d_out, Σr), (Σr, d_in): p_k s_k on A
            ideal[m] = B_s @ A_s  # (d_out, Σr) @ (Σr, d_in) -> (d_out, d_in), float64
            new[k] = (old[k].to(torch.float64) + ideal[m]).float()  # (d_out, d_in)
            applied[m] = new[k].to(torch.float64) - old[k].to(torch.float64)
        metrics = {"agg_error": dense_agg_error(ideal, applied)}
        return replace(state, tensors={**new, **mean_extras(uploads)}, metrics=metrics)

    def export(self, state: FactorState) -> LocalSetup:
        return LocalSetup(
            factors=head_of(state.tensors), residual=keys.of_kind(state.tensors, "residual")
        )

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        rnd, client = ctx.rnd, ctx.client
        fresh = init_factors(
            ctx.base, client.rank, ctx.lora, rnd.seed, "flora-init", rnd.round, client.cid
        )
        factors = {**fresh, **head_of(ctx.payload.tensors)}
        return LocalSetup(factors, residual=keys.of_kind(ctx.payload.tensors, "residual")), cstate


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FLoRA)(traffic.dense_down_pair_up)  # the stacked product down
