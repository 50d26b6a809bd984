"""FedIT: FedAvg of the LoRA factors A and B separately.

Zhang et al., "Towards Building the Federated GPT", ICASSP 2024, arXiv 2305.05644.

Server keeps global ``Ā, B̄`` and sends them; clients continue training from them; the server
sets ``Ā = Σ p_k A_k``, ``B̄ = Σ p_k B_k`` and FedAvg-s the head. The product is inexact:
``Σ p_k B_k A_k − B̄Ā = Σ_{i<j} p_i p_j (B_i − B_j)(A_i − A_j)`` (the "aggregation noise").

Heterogeneous ranks (not in the paper): the global factors live at ``r_max``; a client of rank
``r_k`` receives the leading ``r_k`` rows of ``Ā`` / columns of ``B̄`` and its upload is
zero-padded back to ``r_max`` before averaging (HetLoRA's padding without its weights), so
padded components are diluted toward zero. The global model applies ``s(r_max)``, a client its
own ``s(r_k)``: with ``rescale_b`` (default) it receives ``B̄`` times ``s(r_max)/s(r_k)`` and its
upload's B is mapped back by ``s(r_k)/s(r_max)`` before averaging (``_shared.b_to_client``,
``b_to_global``), so it starts from exactly the global model's leading ``r_k`` components.
``rescale_b: false`` applies ``s(r_k)`` to the cut factors as they are: a rank-``r_k`` client
then starts ``s(r_k)/s(r_max)`` times the global adapter's part (4x for rank 2 of 8). With one
rank both are the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace

from ilora.algorithms import traffic
from ilora.algorithms._pair_servers import PaddedPairServer
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import global_pair_error
from ilora.algorithms.base import register
from ilora.tensors import weighted_mean
from ilora.types import RoundInfo
from ilora.types import Upload


@register("fedit")
@dataclass(frozen=True)
class FedIT(PaddedPairServer):
    """FedAvg of A and B (see the module docstring).

    Bytes per client per round, float32, per adapted layer ``(d_out, d_in)`` at the client's
    rank ``r``: download and upload ``4·r·(d_out + d_in)`` (B and A); plus ``4·n_head`` each way
    for the head's ``n_head`` floats.
    """

    heterogeneous_ranks = True
    mean_aggregation = True  # Ā, B̄ and the head are Σ p_k lift(u_k), lift = zero-pad to r_max

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        ups = [uploads[c] for c in sorted(uploads)]
        padded = [self.lift(state, u.tensors) for u in ups]
        new = weighted_mean(padded, [u.weight for u in ups])
        return replace(
            state, tensors=new, metrics={"agg_error": global_pair_error(state, uploads, new)}
        )


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FedIT)(traffic.pair_both_ways)  # B, A at r_k and the head
