"""CE-LoRA: tri-matrix LoRA, only the small core C travels, personalized aggregation of C.

Li, Liu, Huang, Zhang, Yuan, Hong, "Communication-Efficient and Personalized Federated
Foundation Model Fine-Tuning via Tri-Matrix Adaptation", arXiv 2503.23869 (IEEE TMM 2026).

One round, per adapted layer ``(d_out, d_in)`` at the client's rank ``r``: the adapter is
``ΔW_i = s(r)·B_i C_i A_i`` with ``A_i (r, d_in)``, ``C_i (r, r)``, ``B_i (d_out, r)``. The client
keeps its own ``A_i, B_i`` in ``cstate`` (never sent; at its first round the common seeded LoRA
init ``A`` and ``B = 0``), receives its personalized core ``C̃_i`` (``I_r`` at first) and head,
trains ``A_i, B_i, C_i`` and the head, and uploads ``C_i`` and the head. At its first round it
also uploads per-class statistics of its data under the frozen backbone. The server computes
one weight vector per participant ``i`` over the participants ``j`` (K of them) and sends
``C̃_i = Σ_j w_ij C_j`` ``(r, r)`` and ``head_i = Σ_j w_ij head_j`` next time ``i`` is sampled.

Personalized weights (the paper "learns" them from data and model similarity; the exact rule is
not released, ALGORITHMS.md §3.2 reconstructs it as a pFedGraph-style QP):
``w_i = Proj_Δ(p + (λ/2)·(β s^D_i + (1 − β) s^M_i))``, the Euclidean projection onto the
simplex of the closed-form minimiser of ``‖w − p‖² − λ Σ_j w_j (β s^D_ij + (1 − β) s^M_ij)``,
with ``p_j = n_j / Σ n`` over the participants.

* Model similarity ``s^M_ij``: the cosine of the participants' core updates
  ``ΔC_j = C_j − C_j^sent`` (``model_similarity: update``; the updates are not dominated by the
  common start ``I_r``) or of the cores ``C_j`` themselves (``weights``), all layers flattened
  and concatenated; ``s^M_ii = 1``, 0 when a vector is zero.
* Data similarity ``s^D_ij`` from per-class statistics of the frozen backbone's head inputs
  ``x (d,)``: class counts ``n_ic``, means ``μ_ic (d,)`` and per-coordinate variances
  ``v_ic (d,)`` (a moment-matched diagonal Gaussian per class). With label shares
  ``π_ic = n_ic / Σ_c n_ic``, class overlap ``o_ij = Σ_c min(π_ic, π_jc)``, the squared
  2-Wasserstein distance of two diagonal Gaussians
  ``W_c = ‖μ_ic − μ_jc‖² + ‖√v_ic − √v_jc‖²`` and
  ``F_ij = Σ_c min(π_ic, π_jc) W_c / o_ij`` (classes both hold):
  ``s^D_ij = o_ij · exp(−F_ij / σ)``, ``s^D_ii = 1``, 0 without a shared class. ``σ`` is
  ``bandwidth``, or (``bandwidth: 0``) the median of the positive ``F_ij`` over the round's
  pairs (the lower median; 1 if there is none). A participant whose statistics the server lacks has
  ``s^D_ij = 0`` to the others.

Hooks: ``backbone_feature_batches`` asks the training loop for the frozen backbone's head inputs
at a client's first round only (``cstate`` empty); ``client_init`` joins the client's own A, B
(or the common init, regenerated from ``ctx.rnd.seed`` at the global rank sent in
``Payload.config``) with the received C̃ and head; ``upload`` sends C, the head and, once, the
statistics, keeping A and B in ``cstate``; ``aggregate`` stores new statistics and forms every
participant's C̃ and head; ``download`` sends them.

Choices where the sources are silent or differ:

* The released client uploads the whole model (stock FedLab client); we exchange only C and the
  head (the paper's protocol). The head travels and is aggregated with the same personalized
  weights as C (the paper leaves the head's treatment open).
* Statistics: one diagonal Gaussian per class instead of the released 3-component per-class
  GMMs (no PCA); ``s^D`` and ``σ`` as above (the divergence the server uses is not released).
* Init: the framework's standard LoRA init (``lora.init``; A shared through the seed, B = 0,
  C = I_r) instead of the code's ``A ~ N(0, 1e-3²)``; every trainable tensor uses the run's
  optimizer (no LayerNorm training).
* A client that has never been aggregated receives the global core ``C̄`` (the ``p``-weighted
  mean of the last round's cores, ``I_r`` before any) and the mean head; participants not
  sampled this round keep their personalized ``C̃``. ``export`` (the "global model") is the
  common A, ``B = 0``, ``C̄`` and the mean head, i.e. the pretrained model with the mean head:
  the method is personalized and its number is each client's own model.
* ``agg_error`` is not reported (``round_metrics`` returns ``{}``): A and B never leave the
  clients, so no single global update exists.

Heterogeneous ranks (our extension; the paper is homogeneous): the common A is drawn at the
largest rank and client ``i`` uses its leading ``r_i`` rows, so index ``a`` of every core refers
to the same initial component. Entry ``(a, b)`` of ``C̃_i`` ``(r_i, r_i)`` is the
``w_i``-weighted mean of ``C_j[a, b]`` over the participants whose rank exceeds ``max(a, b)``
(weights renormalised over them; an entry no one with positive weight covers keeps the client's
own value); ``C̄`` likewise with ``p`` at the largest rank. Cores are mixed unscaled: each
multiplies its client's own ``s(r_i)·B_i … A_i``, and every client starts from ``I``. Model
similarity compares the leading ``min(r_i, r_j)`` blocks. With one rank this is
``C̃_i = Σ_j w_ij C_j``.

Bytes per client per round (float32), per adapted layer ``(d_out, d_in)`` at the client's rank
``r``: download ``4·r²`` (C̃) and upload ``4·r²`` (C), independent of ``d_out, d_in``; plus
``4·n_head`` each way for the head's ``n_head`` floats; plus, at a client's first round only,
``4·K_cls·(2d + 1)`` up for the statistics of ``K_cls`` classes over ``d`` head inputs (counts,
means, variances).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import TYPE_CHECKING
from typing import Literal

from ilora.algorithms import traffic
from ilora.algorithms._ce_lora_similarity import block_mean
from ilora.algorithms._ce_lora_similarity import class_divergence
from ilora.algorithms._ce_lora_similarity import class_statistics
from ilora.algorithms._ce_lora_similarity import median_positive
from ilora.algorithms._ce_lora_similarity import mix_heads
from ilora.algorithms._ce_lora_similarity import model_similarity
from ilora.algorithms._ce_lora_similarity import project_to_simplex
from ilora.algorithms._shared import head_of
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms._shared import truncated
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import check_at_least
from ilora.algorithms.base import hyperparameter
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

if TYPE_CHECKING:
    import torch

LOCAL = "local/"  # cstate: the client's own A and B
STATS = "stats/"  # upload: count (K_cls,), mean (K_cls, d), var (K_cls, d)
INIT_RANK = "init_rank"  # Payload.config: the rank at which the common A is drawn
STAT_NAMES = ("count", "mean", "var")


@dataclass(frozen=True)
class CELoRAState:
    """Server state of CE-LoRA.

    ``shared`` holds ``C̄`` per layer ``(r_max, r_max)`` and the mean head; ``personal`` each
    aggregated client's ``C̃_i`` and head under ``"<cid>/"``; ``stats`` each client's class
    statistics under ``"<cid>/"``; ``A0``/``B0`` the common init at ``rank`` (export only).
    """

    shared: TensorDict
    personal: TensorDict
    stats: TensorDict
    A0: TensorDict
    B0: TensorDict
    lora: LoRASpec
    rank: int
    metrics: dict[str, float] = field(default_factory=dict)


@register("ce-lora")
@dataclass(frozen=True)
class CELoRA(Algorithm[CELoRAState]):
    """CE-LoRA (see the module docstring)."""

    heterogeneous_ranks = True
    stateful_clients = True
    personalized = True

    lam: float = hyperparameter(
        1.0,
        "ours",
        "λ: strength of the similarity term in the weights (0 = p, FedAvg of C); "
        "ours: the server is unreleased and the paper gives no value",
    )
    beta: float = hyperparameter(
        0.5,
        "ours",
        "β: share of data similarity (vs model similarity), [0, 1]; ours: the paper "
        "gives no value, 0.5 weighs both kinds of similarity equally",
    )
    model_similarity: Literal["update", "weights"] = hyperparameter(
        "update",
        "ours",
        "cosine of the core updates C_j - C_j^sent (update) or of C_j (weights); "
        "ours: the paper gives no formula, and updates are less dominated by the shared init",
    )
    bandwidth: float = hyperparameter(
        0.0,
        "ours",
        "σ of s^D = overlap·exp(-F/σ); 0 = median of F over the round's pairs "
        "(ours: the paper gives no σ, the median heuristic needs no tuning per task)",
    )
    stats_batches: int = hyperparameter(
        0,
        "code",
        "local batches whose backbone features form the statistics; 0 = all (released "
        "code: the whole training set)",
    )

    def __post_init__(self) -> None:
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.model_similarity not in ("update", "weights"):
            raise ValueError(
                f"model_similarity must be update | weights, got {self.model_similarity!r}"
            )
        if not (self.bandwidth >= 0 and math.isfinite(self.bandwidth)):
            raise ValueError(f"bandwidth must be a finite number >= 0, got {self.bandwidth}")
        check_at_least(self, stats_batches=0)

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> CELoRAState:
        import torch

        r = max_rank(clients)
        init = init_factors(template, r, lora, seed, "lora-init")
        C = {keys.make(m, "lora_C"): torch.eye(r) for m in keys.modules(init)}  # (r, r)
        head = {k: v.clone() for k, v in head_of(template).items()}
        return CELoRAState(
            {**C, **head},
            {},
            {},
            keys.of_kind(init, "lora_A"),
            keys.of_kind(init, "lora_B"),
            lora,
            r,
        )

    def download(self, state: CELoRAState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        return Payload(_sent(state, client.cid, client.rank), {INIT_RANK: state.rank})

    def aggregate(
        self, state: CELoRAState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> CELoRAState:
        import torch

        cids = sorted(uploads)
        stats = dict(state.stats)
        for cid in cids:
            stats.update(with_prefix(strip_prefix(uploads[cid].tensors, STATS), f"{cid}/"))
        cores = [keys.of_kind(uploads[c].tensors, "lora_C") for c in cids]
        heads = [head_of(uploads[c].tensors) for c in cids]
        p = normalized_weights(uploads)
        W = self.weights(
            torch.tensor([p[c] for c in cids], dtype=torch.float64),
            self.data_similarity([_stats_of(stats, c) for c in cids]),
            model_similarity(self._similarity_vectors(state, cids, cores)),
        )  # (K, K): row i = the weights of participant i
        personal = dict(state.personal)
        for row, cid in enumerate(cids):
            C = {k: block_mean([c[k] for c in cores], W[row], cores[row][k]) for k in cores[row]}
            personal.update(with_prefix({**C, **mix_heads(heads, W[row])}, f"{cid}/"))
        pw = torch.tensor([p[c] for c in cids], dtype=torch.float64)
        C_bar = {k: block_mean([c.get(k) for c in cores], pw, v) for k, v in _cores(state).items()}
        shared = {**C_bar, **mix_heads(heads, pw)}
        return replace(state, shared=shared, personal=personal, stats=stats, metrics={})

    def export(self, state: CELoRAState) -> LocalSetup:
        return LocalSetup(factors={**state.A0, **state.B0, **state.shared})

    def round_metrics(self, state: CELoRAState) -> dict[str, float]:
        return {}  # no single global update: A and B stay on the clients

    # ---- client
    def backbone_feature_batches(self, ctx: ClientContext, cstate: TensorDict) -> int | None:
        return None if strip_prefix(cstate, LOCAL) else self.stats_batches

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        own = strip_prefix(cstate, LOCAL)
        if not own:  # first round: the common init, regenerated from the seed
            r_max = int(ctx.payload.config[INIT_RANK])
            common = init_factors(ctx.base, r_max, ctx.lora, ctx.rnd.seed, "lora-init")
            own = truncated(common, ctx.client.rank)
        return LocalSetup(factors={**own, **ctx.payload.tensors}), cstate

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        own = keys.of_kind(trained, "lora_A", "lora_B")
        sent = {k: v for k, v in trained.items() if k not in own}  # C and the head
        if ctx.features is not None:
            sent.update(with_prefix(class_statistics(ctx.features), STATS))
        return Upload(sent, float(ctx.client.num_examples)), with_prefix(own, LOCAL)

    # ---- math
    def weights(self, p: torch.Tensor, s_data: torch.Tensor, s_model: torch.Tensor) -> torch.Tensor:
        """Return ``W (K, K)``: row ``i`` is ``Proj_Δ(p + (λ/2)(β s^D_i + (1 − β) s^M_i))``."""
        import torch

        sim = self.beta * s_data + (1.0 - self.beta) * s_model  # (K, K)
        return torch.stack([project_to_simplex(p + 0.5 * self.lam * row) for row in sim])

    def data_similarity(self, stats: Sequence[TensorDict | None]) -> torch.Tensor:
        """Return ``s^D (K, K)`` from per-class statistics (see the module docstring)."""
        import torch

        K = len(stats)
        overlap = torch.zeros(K, K, dtype=torch.float64)
        dist = torch.zeros(K, K, dtype=torch.float64)
        for i in range(K):
            for j in range(i + 1, K):
                a, b = stats[i], stats[j]
                if a is not None and b is not None:
                    o, f = class_divergence(a, b)
                    overlap[i, j] = overlap[j, i] = o
                    dist[i, j] = dist[j, i] = f
        sigma = self.bandwidth or median_positive(dist[torch.triu(overlap, 1) > 0])
        sim = overlap * torch.exp(-dist / sigma)
        return sim.fill_diagonal_(1.0)

    def _similarity_vectors(
        self, state: CELoRAState, cids: Sequence[int], cores: Sequence[TensorDict]
    ) -> list[TensorDict]:
        if self.model_similarity == "weights":
            return [dict(c) for c in cores]
        out = []
        for cid, core in zip(cids, cores, strict=True):
            r = _core_rank(core)
            start = keys.of_kind(_sent(state, cid, r), "lora_C")
            out.append({k: v - start[k] for k, v in core.items()})  # (r, r)
        return out


def _cores(state: CELoRAState) -> TensorDict:
    return dict(keys.of_kind(state.shared, "lora_C"))


def _core_rank(core: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(core.values())).shape[0])


def _sent(state: CELoRAState, cid: int, r: int) -> TensorDict:
    """Return what client ``cid`` (rank ``r``) receives: its ``C̃`` and head, or the shared ones."""
    own = strip_prefix(state.personal, f"{cid}/")
    if own:
        return own
    C = {k: v[:r, :r].contiguous() for k, v in _cores(state).items()}  # (r, r)
    return {**C, **head_of(state.shared)}


def _stats_of(stats: Mapping[str, torch.Tensor], cid: int) -> TensorDict | None:
    own = strip_prefix(stats, f"{cid}/")
    return own if all(n in own for n in STAT_NAMES) else None


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
@traffic.formula(CELoRA)
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """Return the ``(r, r)`` cores and head each way, plus per-class statistics up once."""
    stats = s.class_stats() if c.first else 0
    return s.core(c.rank) + s.n_head, s.core(c.rank) + s.n_head + stats
