"""FFA-LoRA: freeze a shared random A, train and average only B.

Sun, Li, Li, Ding, "Improving LoRA in Privacy-preserving Federated Learning", ICLR 2024,
arXiv 2403.12313. Everyone shares one seeded, frozen ``A`` (standard LoRA init) and trains only
``B`` (from ``B = 0``) and the head; the server sets ``B̄ = Σ p_k B_k``. Since ``A`` is common,
``Σ p_k B_k A = B̄ A``: the aggregation is exact (``agg_error`` ≈ 0).

Hooks: ``server_init`` draws ``A`` at ``r_max`` with ``init_factors(.., seed, "lora-init")``;
``download`` sends ``B̄`` and the head only, plus ``rank_max`` in ``Payload.config``;
``client_init`` regenerates the same ``A`` from ``ctx.base`` shapes and ``ctx.rnd.seed``, so
``A`` is never sent, and marks only B and the head trainable; ``upload`` drops ``A``;
``aggregate`` averages B and FedAvg-s the head.

Heterogeneous ranks (not in the paper; ALGORITHMS.md's extension): client ``k`` uses the
leading ``r_k`` rows of the one global ``A``, so its update ``s_k B_k A[:r_k] = s_k pad(B_k) A``
stays in the common basis. To stay exact when ``s = α/r`` differs by rank, the scale is folded:
the server stores ``B̄ = Σ p_k (s_k/s_max) pad(B_k)`` (the global model applies ``s_max``) and
sends ``(s_max/s_k) B̄[:, :r_k]``, so a client starts from the global model's leading ``r_k``
components. With equal ranks both factors are 1 and this is the paper's plain mean of B.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace

from ilora.algorithms import traffic
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import agg_error
from ilora.algorithms._shared import ideal_stack
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import mean_extras
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import resize_rank
from ilora.lora.linalg import truncate_rank
from ilora.lora.spec import LoRASpec
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

RANK_MAX = "rank_max"  # Payload.config key: the rank of the shared A the client regenerates


@register("ffa-lora")
@dataclass(frozen=True)
class FFALoRA(Algorithm[FactorState]):
    """Frozen shared A, federated B (see the module docstring). No hyperparameters.

    Bytes per client per round (float32), per adapted layer ``(d_out, d_in)`` at rank ``r_k``:
    download ``4·d_out·r_k`` (B only; A is regenerated from the seed), upload ``4·d_out·r_k``
    (B only); plus ``4·n_head`` each way for the head's ``n_head`` floats.
    """

    heterogeneous_ranks = True
    mean_aggregation = True  # B̄ and the head are Σ p_k lift(u_k) (``lift``: scale and pad B)

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        r = max_rank(clients)
        factors = init_factors(template, r, lora, seed, "lora-init")  # A random, B = 0
        head = {k: v.clone() for k, v in keys.of_kind(template, "param").items()}
        return FactorState({**factors, **head}, lora, r)

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        r = client.rank
        ratio = state.lora.scale(state.rank) / state.lora.scale(r)  # s_max / s_k
        B = {
            k: (ratio * truncate_rank(v, r, "lora_B")).contiguous()  # (d_out, r_k)
            for k, v in keys.of_kind(state.tensors, "lora_B").items()
        }
        return Payload({**B, **keys.of_kind(state.tensors, "param")}, {RANK_MAX: state.rank})

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        p, s_max = normalized_weights(uploads), state.lora.scale(state.rank)
        A = keys.of_kind(state.tensors, "lora_A")
        B: TensorDict = {}
        for cid in sorted(uploads):
            for k, b in keys.of_kind(uploads[cid].tensors, "lora_B").items():
                coeff = p[cid] * state.lora.scale(b.shape[1]) / s_max  # p_k s_k / s_max
                term = coeff * resize_rank(b.double(), state.rank, "lora_B")  # (d_out, r_max)
                B[k] = B[k] + term if k in B else term
        new = {**A, **{k: v.float() for k, v in B.items()}, **mean_extras(uploads)}
        metrics = {"agg_error": self._agg_error(state, new, uploads)}
        return replace(state, tensors=new, metrics=metrics)

    def lift(self, state: FactorState, tensors: TensorDict) -> TensorDict:
        """Return B as ``(s_k/s_max)·pad(B_k)`` at ``r_max`` (the term ``aggregate`` averages)."""
        s_max, out = state.lora.scale(state.rank), dict(tensors)
        for k, b in keys.of_kind(tensors, "lora_B").items():
            ratio = state.lora.scale(b.shape[1]) / s_max
            out[k] = (ratio * resize_rank(b.double(), state.rank, "lora_B")).float()
        return out

    def export(self, state: FactorState) -> LocalSetup:
        return LocalSetup(factors=dict(state.tensors))

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        r_max, r = int(ctx.payload.config[RANK_MAX]), ctx.client.rank
        shared = init_factors(ctx.base, r_max, ctx.lora, ctx.rnd.seed, "lora-init")
        A = {
            k: truncate_rank(v, r, "lora_A") for k, v in keys.of_kind(shared, "lora_A").items()
        }  # (r_k, d_in): the leading rows of the server's A, bitwise
        received = dict(ctx.payload.tensors)  # B and the head: what is trained
        return LocalSetup(factors={**A, **received}, trainable=frozenset(received)), cstate

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        sent = {k: v for k, v in trained.items() if keys.kind_of(k) != "lora_A"}
        return Upload(sent, float(ctx.client.num_examples)), cstate

    # ---- math
    @staticmethod
    def _agg_error(state: FactorState, new: TensorDict, uploads: Mapping[int, Upload]) -> float:
        """Return ``agg_error`` of ``s_max B̄ A`` against ``Σ p_k s_k B_k A[:r_k]``."""
        A = keys.of_kind(state.tensors, "lora_A")
        with_A = {  # each upload completed with the leading rows of A its client used
            cid: replace(u, tensors={**u.tensors, **_leading(A, u.tensors)})
            for cid, u in uploads.items()
        }
        s_max = state.lora.scale(state.rank)
        ideal = {m: ideal_stack(with_A, state.lora, m) for m in keys.modules(A)}
        applied = {
            m: (new[keys.make(m, "lora_B")], s_max * A[keys.make(m, "lora_A")]) for m in ideal
        }
        return agg_error(ideal, applied)


def _leading(A: TensorDict, upload: TensorDict) -> TensorDict:
    """Return, per layer, the leading rows of the global ``A`` at the rank of the uploaded B."""
    out: TensorDict = {}
    for m in keys.modules(A):
        r = upload[keys.make(m, "lora_B")].shape[1]
        out[keys.make(m, "lora_A")] = truncate_rank(A[keys.make(m, "lora_A")], r, "lora_A")
    return out  # (r_k, d_in) per layer


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
@traffic.formula(FFALoRA)
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """B alone at ``r_k`` and the head, each way (A is frozen and shared by seed)."""
    return s.b_only(c.rank) + s.n_head, s.b_only(c.rank) + s.n_head
