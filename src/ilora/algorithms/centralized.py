"""Centralized: LoRA fine-tuning on the pooled data of all clients, the upper reference line.

The engine runs one client that holds every training example (``pooled_data``), at the largest
client rank, for as many local steps per round as all sampled clients of a federated run take
together, so the compute budget matches. The server simply keeps what that client trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace

from ilora.algorithms import traffic
from ilora.algorithms._pair_servers import GlobalPairServer
from ilora.algorithms._shared import FactorState
from ilora.algorithms.base import register
from ilora.types import RoundInfo
from ilora.types import Upload


@register("centralized")
@dataclass(frozen=True)
class Centralized(GlobalPairServer):
    """Pooled-data training (see the module docstring). No hyperparameters.

    Bytes per round (one pooled client at the largest rank ``r``), float32, per adapted layer
    ``(d_out, d_in)``: ``4·r·(d_out + d_in)`` each way, plus ``4·n_head`` for the head; a
    reference only, since no data leaves a client in a real federation.
    """

    heterogeneous_ranks = True
    pooled_data = True

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        if len(uploads) != 1:
            raise ValueError(f"centralized expects exactly one (pooled) client, got {len(uploads)}")
        (only,) = uploads.values()
        return replace(state, tensors=dict(only.tensors), metrics={"agg_error": 0.0})


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(Centralized)(traffic.pair_both_ways)  # one pooled client at r_max
