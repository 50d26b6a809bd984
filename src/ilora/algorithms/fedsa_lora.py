"""FedSA-LoRA: share A, keep B (and the head) local (Guo et al., ICLR 2025, arXiv 2410.01463).

Clients' learned A matrices are similar (general knowledge) while B diverges (client-specific),
so only A is uploaded and averaged: ``Ā = Σ p_k A_k``. Each client keeps its own B and its own
classifier head in its client state (the released configuration keeps ``lora_B`` and
``classifier`` local). Round 1: the standard LoRA init (seeded A shared, B = 0) and the initial
head. Hooks: ``download`` sends Ā; ``client_init`` joins Ā with the client's own B and head;
``upload`` sends A only and keeps B and the head in ``cstate``.

The method is personalized: its number is each client's own model on its own test share
(``data.local_test_fraction``). Its "global model" (``export``) is Ā with B = 0 and the initial
head, i.e. the pretrained model: there is no global B to evaluate, and global accuracy is
reported only for completeness. Bytes per client per round and layer: down and up ``4·r·d_in``
(plus its starting B and head at its first round only); no head traffic after that.

Heterogeneous ranks (our extension; the paper is homogeneous): the global A lives at ``r_max``;
a client of rank ``r_k`` receives its leading ``r_k`` rows and keeps a rank-``r_k`` B. Row ``i``
of Ā is the weighted mean over the clients that uploaded a row ``i`` this round (weights
renormalised over those clients; no zero padding, which would shrink the rows only large
clients own); a row nobody uploaded keeps its value. With one rank this is ``Σ p_k A_k``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace

from ilora.algorithms import traffic
from ilora.algorithms._shared import componentwise_mean
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import truncated
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.tensors import strip_prefix
from ilora.tensors import with_prefix
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

LOCAL = "local/"


@dataclass(frozen=True)
class FedSAState:
    """Global A per layer, the initial B (zeros) and head, the run's spec, who has joined."""

    A: TensorDict
    B0: TensorDict
    head0: TensorDict
    lora: LoRASpec
    seen: frozenset[int] = frozenset()  # clients that hold their own B and head
    metrics: dict[str, float] = field(default_factory=dict)


@register("fedsa-lora")
@dataclass(frozen=True)
class FedSALoRA(Algorithm[FedSAState]):
    """Share A, keep B and the head local (see the module docstring). No hyperparameters."""

    heterogeneous_ranks = True
    stateful_clients = True
    personalized = True

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FedSAState:
        init = init_factors(template, max_rank(clients), lora, seed, "lora-init")
        head = {k: v.clone() for k, v in keys.of_kind(template, "param").items()}
        return FedSAState(keys.of_kind(init, "lora_A"), keys.of_kind(init, "lora_B"), head, lora)

    def download(self, state: FedSAState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        A = truncated(state.A, client.rank)
        if client.cid in state.seen:
            return Payload(A)
        first = {**truncated(state.B0, client.rank), **state.head0}  # sent once
        return Payload({**A, **with_prefix(first, LOCAL)})

    def aggregate(
        self, state: FedSAState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FedSAState:
        cids = sorted(uploads)
        weights = [uploads[c].weight for c in cids]
        A = {
            k: componentwise_mean(v, "lora_A", [uploads[c].tensors[k] for c in cids], weights)
            for k, v in state.A.items()
        }
        # agg_error is not defined here: the clients' products B_k Ā never form one global update
        return replace(state, A=A, seen=state.seen | frozenset(uploads), metrics={})

    def export(self, state: FedSAState) -> LocalSetup:
        return LocalSetup(factors={**state.A, **state.B0, **state.head0})

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        own = strip_prefix(cstate, LOCAL) or strip_prefix(ctx.payload.tensors, LOCAL)
        shared = {k: v for k, v in ctx.payload.tensors.items() if not k.startswith(LOCAL)}
        return LocalSetup(factors={**shared, **own}), cstate

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        A = dict(keys.of_kind(trained, "lora_A"))
        local = {k: v for k, v in trained.items() if k not in A}  # B and the head stay here
        return Upload(A, float(ctx.client.num_examples)), with_prefix(local, LOCAL)


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
@traffic.formula(FedSALoRA)
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """Return A at ``r_k`` each way; a first contact also downloads its starting B and head."""
    first = s.b_only(c.rank) + s.n_head if c.first else 0
    return s.a_only(c.rank) + first, s.a_only(c.rank)
