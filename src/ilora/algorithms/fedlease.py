"""FedLEASE: adaptive LoRA experts allocation and selection.

Wang, Bian, Zhang, Xu, "FedLEASE: Adaptive LoRA Experts Allocation and Selection for Federated
Fine-Tuning", NeurIPS 2025, arXiv 2509.15087.

Clients hold different tasks. **Warm-up** (rounds ``1..E_w``, ``warmup_rounds``): every client
trains its own single LoRA ``(A_i (r, d_in), B_i (d_out, r))`` and its head, continuing from
its previous round; the server aggregates nothing, it only keeps each client's latest LoRA.
**Allocation** (server, after round ``E_w``): distances between the clients' warm-up LoRAs
``d(i, j) = mean_l (1 − cos(vec B_i^l, vec B_j^l))`` over the adapted layers ``l`` (B, not A,
carries the task); agglomerative clustering with average linkage for ``M = 2..M_max``
(``max_experts``), ``M`` with the best silhouette score; expert ``m`` ``(A_m, B_m)`` is the
weighted mean of its cluster's warm-up LoRAs (A and B separately). **Selection** (rounds
``> E_w``): a client of cluster ``c`` has all ``M`` experts plus a router ``G (2M−1, d_in)``
per adapted layer: per token ``p = softmax(G x)``, the top ``M`` of the ``2M − 1`` scores are
kept and renormalised to ``w``; outputs ``0..M−1`` select experts ``0..M−1`` and outputs
``M..2M−2`` all select the own expert ``c``, so ``c`` is always selected and 1..M distinct
experts serve a token: ``y = W x + s Σ_kept w_j B_{π(j)} A_{π(j)} drop(x)``,
``s = LoRASpec.scale(r)``. Only ``(A_c, B_c)`` and the router train (the other experts are a
frozen bank in ``LoRALinear``); the head trains and stays local. Server: expert ``m`` ← weighted
mean over the cluster's clients of this round of their ``(A_c, B_c)``; router of cluster ``m``
← the same mean of their routers; a cluster nobody uploaded keeps its expert and router.

Hooks: ``download`` (first contact: the initial LoRA at the client's rank and the head under
``local/``; warm-up: nothing; selection: the ``M`` experts stacked as
``<module>.experts_A (M, r, d_in)`` / ``<module>.experts_B (M, d_out, r)``, the cluster's
``<module>.router (2M−1, d_in)`` and the cluster id in ``Payload.config``), ``client_init``
(warm-up: its own LoRA and head from ``cstate``; selection: its own expert as the live pair,
the others as the frozen bank, the router and the output→expert map, ``trainable`` = pair,
router and head), ``upload`` (warm-up: the LoRA; selection: own expert and router; the head,
and during warm-up the LoRA, stay in ``cstate`` under ``local/``), ``aggregate`` (record
warm-up LoRAs, cluster after round ``E_w``, per-cluster means afterwards). ``round_metrics``:
``agg_error`` over all (cluster, layer) pairs of the per-cluster factor mean against
``Σ_{k∈m} p_k s B_k A_k`` (``p`` normalised within the cluster), only in rounds where an expert
was averaged; ``num_experts`` = ``M`` once allocated.
The method is personalized: its number is each client's own model (its experts, router and
head) on its own test share.

Global model (``export``; the paper has none): before allocation the pretrained model (initial
A, ``B = 0``, initial head: warm-up aggregates nothing); after it the base plus the dense mean
of the experts ``(1/M) Σ_m s B_m A_m`` (a uniform mixture, router-free, as a residual) with the
initial head, since heads are per-client. Its accuracy is reported for completeness only.

Choices where the sources are silent or differ:

* Expert init: the paper averages the cluster's warm-up LoRAs; the released code (first
  clustered round) starts a client's own expert from its own warm-up LoRA and the other experts
  fresh (``B = 0``) and averages from the next round on. We follow the paper.
* Means are weighted by the upload weight (``fed.weighting``: examples or uniform); the code
  averages uniformly (equal-size clients in the paper, where both agree).
* Cosine as the code: ``⟨b_i, b_j⟩ / (‖b_i‖ ‖b_j‖ + 1e-8)`` in float64 (a zero B is at distance
  1), ``d(i, i) = 0``; the mean runs over every adapted layer (the code: mean over q/v of the
  mean over layers, the same for equal counts). Silhouette as scikit-learn's (a singleton
  cluster scores 0); ties in the score go to the smallest ``M`` (the code's ``argmax``);
  ``M`` is at most ``n − 1`` for ``n`` clustered clients (silhouette needs it); with ``n <= 2``
  every client is its own expert (``M = n``). Linkage ties merge the first pair in client order.
* Router init: PEFT's ``nn.Linear`` default (uniform, bound ``1/sqrt(d_in)``), seeded per
  (cluster, layer); the router reads ``x`` and the experts ``dropout(x)``, as the code.
* Partial participation (the paper samples everyone): clustering uses the clients that
  uploaded during warm-up (their latest LoRA). A client first sampled after allocation does one
  warm-up round (initial LoRA, upload it) and is put in the cluster with the smallest average
  distance to its members (average linkage to each cluster); it joins selection next time.
* The released code trains only the LoRA factors (and the router): its loop freezes every other
  parameter, the classifier included. Whether the head trains is ``train.train_head`` here; it
  stays on the client either way. AdamW (wd 0.05) and fp16 are the training config's business.

Heterogeneous ranks (our extension; the paper is homogeneous): client ``k`` has rank ``r_k``,
``R = r_max`` is the largest client rank, ``s_k = s(r_k)``, ``S = s(R)``. The initial LoRA and
the experts live at ``R`` in *expert units* (applied at ``S``); what travels up is always the
client's own factors at ``r_k`` as trained (applied at ``s_k``).

* Warm-up: a client trains an ordinary rank-``r_k`` LoRA at ``s_k`` from the leading ``r_k``
  components of the initial LoRA (``B = 0``, so the start is the pretrained model at any rank).
* Clustering: ``d(i, j)`` on the B matrices zero-padded to ``R``; zero columns change neither
  ``⟨b_i, b_j⟩`` nor ``‖b_i‖``, so the cosine is that of the components both clients own.
* Expert units: the server folds the scaling into A, ``A_k ← (s_k / S) A_k`` (then
  ``S B_k A_k`` is the client's update ``s_k B_k A_k``), before any averaging.
* Experts, per component: row ``i`` of ``A_m`` and column ``i`` of ``B_m`` are the weighted mean
  over the cluster's clients (warm-up LoRAs at allocation, this round's uploads afterwards)
  whose rank exceeds ``i``, weights renormalised over them; a component none of them owns keeps
  its value (at allocation: the initial LoRA's, ``A`` random and ``B = 0``). Zero-padded
  averaging (FedIT/HetLoRA) would instead shrink the high components towards 0 whenever
  low-rank clients take part, and would start a component no member owns at ``A = B = 0``, a
  point where gradient descent cannot move it. Routers are rank-free: a plain weighted mean.
* Selection client: its own expert cut to its leading ``r_k`` components, with A lifted to
  ``(S / s_k) A_c[:r_k]`` so that at its own scaling ``s_k`` it applies exactly
  ``S B_c[:, :r_k] A_c[:r_k]`` (the server's fold undoes the lift on upload, so an untrained
  upload leaves the expert as it was). The other ``M − 1`` experts stay whole at ``R`` as the
  frozen bank, applied at ``S`` by ``LoRALinear`` (a bank may have its own rank; each expert is
  applied at the scaling of its rank). The bank is frozen: it costs no gradients and no
  optimizer state, only the forward pass, so the rank-``r_k`` budget (what trains) holds, and the
  client routes over the same full experts as everyone (a truncated bank would make a
  low-rank client's router learn on degraded experts, and that router is averaged with its
  cluster's). Hence the client starts from the global mixture of its cluster with its own expert
  truncated to ``r_k`` (exactly the global mixture when ``r_k = R``); components ``r_k..R − 1``
  of its own expert are trained by the higher-rank members of its cluster only.
* ``agg_error`` of cluster ``m``: the clients' exact ``Σ p_k s_k B_k A_k`` against the components
  this round averaged, ``S B_m[:, :ρ] A_m[:ρ]`` with ``ρ`` the largest rank uploaded to ``m``
  (the kept higher components are no aggregate of this round).

Bytes per client per round (float32, per adapted layer ``(d_out, d_in)``, client rank ``r``,
largest client rank ``R``, ``M`` experts once allocated): first contact (any round): down
``4·r·(d_out + d_in)`` plus ``4·n_head`` (initial LoRA cut to ``r`` and head), up
``4·r·(d_out + d_in)``; later warm-up rounds: down 0, up ``4·r·(d_out + d_in)``; selection
rounds: down ``4·(M·R·(d_out + d_in) + (2M−1)·d_in)`` (all experts at ``R``, the same stack for
every client, and the cluster's router), up ``4·(r·(d_out + d_in) + (2M−1)·d_in)`` (own expert
at ``r`` and router). With equal ranks ``R = r``. The head never travels after first contact.
``M`` is data-dependent: the formula (``_fedlease_experts.floats_per_round``) takes
``warmup_rounds`` and the chosen ``num_experts`` (reported by ``round_metrics``) as
hyperparameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ilora.algorithms import traffic
from ilora.algorithms._clustering import b_distances
from ilora.algorithms._clustering import choose_clusters
from ilora.algorithms._fedlease_experts import expert_layer_setup
from ilora.algorithms._fedlease_experts import expert_pairs
from ilora.algorithms._fedlease_experts import expert_units
from ilora.algorithms._fedlease_experts import floats_per_round
from ilora.algorithms._shared import agg_error
from ilora.algorithms._shared import head_of
from ilora.algorithms._shared import ideal_stack
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import rank_of
from ilora.algorithms._shared import truncated
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import check_at_least
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import resize_rank
from ilora.lora.spec import LoRASpec
from ilora.seeding import generator
from ilora.tensors import strip_prefix
from ilora.tensors import weighted_mean
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

LOCAL = "local/"  # a client's own tensors: its warm-up LoRA and its head
CLUSTER = "cluster"  # Payload.config key: the client's cluster (its own expert)


@dataclass(frozen=True)
class FedLEASEState:
    """Server state (module docstring).

    ``init``/``head0``: the initial LoRA at ``rank`` (``R``, the largest client rank) and head
    (first contacts, export before allocation); ``warm``: ``"<cid>/<module>.lora_A|lora_B"``,
    each client's latest warm-up LoRA as uploaded (rank ``r_k``, applied at ``s(r_k)``), with its
    upload weight in ``warm_weight``; ``cluster_of``: client → expert, empty before allocation;
    ``experts``: ``<module>.experts_A (M, R, d_in)``, ``<module>.experts_B (M, d_out, R)`` in
    expert units (applied at ``s(R)``); ``routers``: ``"<m>/<module>.router" (2M−1, d_in)``;
    ``seen``: clients that uploaded.
    """

    init: TensorDict
    head0: TensorDict
    lora: LoRASpec
    rank: int
    warm: TensorDict = field(default_factory=dict)
    warm_weight: dict[int, float] = field(default_factory=dict)
    cluster_of: dict[int, int] = field(default_factory=dict)
    experts: TensorDict = field(default_factory=dict)
    routers: TensorDict = field(default_factory=dict)
    seen: frozenset[int] = frozenset()
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num_experts(self) -> int:
        return max(self.cluster_of.values(), default=-1) + 1


@register("fedlease")
@dataclass(frozen=True)
class FedLEASE(Algorithm[FedLEASEState]):
    """Clustered LoRA experts with a per-client top-M router (see the module docstring)."""

    heterogeneous_ranks = True
    stateful_clients = True
    personalized = True

    warmup_rounds: int = hyperparameter(
        5,
        "code",
        "warm-up rounds E_w of local-only LoRA training before clustering (released code: 5)",
    )
    max_experts: int = hyperparameter(
        4,
        "code",
        "largest number of experts M_max tried by the silhouette search (released code: 4)",
    )

    def __post_init__(self) -> None:
        check_at_least(self, warmup_rounds=1, max_experts=2)

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FedLEASEState:
        r = max_rank(clients)
        head = {k: v.clone() for k, v in keys.of_kind(template, "param").items()}
        return FedLEASEState(init_factors(template, r, lora, seed, "lora-init"), head, lora, r)

    def download(self, state: FedLEASEState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        m = state.cluster_of.get(client.cid)
        if m is not None:
            router = strip_prefix(state.routers, f"{m}/")
            return Payload({**state.experts, **router}, {CLUSTER: m})
        if client.cid in state.seen:
            return Payload({})  # warm-up: the client continues its own LoRA
        initial = truncated(state.init, client.rank)  # (r_k, d_in), (d_out, r_k)
        return Payload(with_prefix({**initial, **state.head0}, LOCAL))

    def aggregate(
        self, state: FedLEASEState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FedLEASEState:
        selected = {c: u for c, u in uploads.items() if c in state.cluster_of}
        joining = {c: u for c, u in uploads.items() if c not in state.cluster_of}
        new = _average_clusters(state, selected)
        new = _record_warmup(new, joining)
        if not state.cluster_of and rnd.round >= self.warmup_rounds:
            return _allocate(new, self.max_experts, rnd.seed)
        if state.cluster_of and joining:
            return _assign_late(new, sorted(joining), state.cluster_of)
        return new

    def export(self, state: FedLEASEState) -> LocalSetup:
        import torch

        if not state.experts:
            return LocalSetup(factors={**state.init, **state.head0})
        s, M = state.lora.scale(state.rank), state.num_experts
        residual = {}
        for module in keys.modules(state.experts):
            EA = state.experts[keys.make(module, "experts_A")].double()  # (M, r, d_in)
            EB = state.experts[keys.make(module, "experts_B")].double()  # (M, d_out, r)
            mean = torch.einsum("mor,mri->oi", EB, EA) * (s / M)  # -> (d_out, d_in)
            residual[keys.make(module, "residual")] = mean.float()
        return LocalSetup(factors=dict(state.head0), residual=residual)

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        own = strip_prefix(cstate, LOCAL) or strip_prefix(ctx.payload.tensors, LOCAL)
        if CLUSTER not in ctx.payload.config:
            return LocalSetup(factors=own), cstate  # warm-up: its LoRA and head, all trained
        c = int(ctx.payload.config[CLUSTER])
        layers = expert_layer_setup(ctx.payload.tensors, c, ctx.client.rank, ctx.lora)
        head = head_of(own)
        live = {k for k in layers if keys.kind_of(k) in keys.PARAM_KINDS}
        return LocalSetup({**layers, **head}, trainable=frozenset(live | set(head))), cstate

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        head = head_of(trained)
        sent = {k: v for k, v in trained.items() if k not in head}  # pair (+ router)
        keep = head if CLUSTER in ctx.payload.config else trained  # warm-up keeps its LoRA
        return Upload(sent, float(ctx.client.num_examples)), with_prefix(keep, LOCAL)


# ---- server side: state transitions


def _warm_lora(state: FedLEASEState, cid: int) -> TensorDict:
    return strip_prefix(state.warm, f"{cid}/")


def _warm_bs(state: FedLEASEState, cids: Sequence[int]) -> list[list[torch.Tensor]]:
    """Return the clients' warm-up B per layer, zero-padded to ``R`` ``(d_out, R)``."""
    modules = keys.modules(state.init)
    return [
        [
            resize_rank(state.warm[f"{c}/{keys.make(m, 'lora_B')}"], state.rank, "lora_B")
            for m in modules
        ]
        for c in cids
    ]


def _record_warmup(state: FedLEASEState, uploads: Mapping[int, Upload]) -> FedLEASEState:
    """Return ``state`` holding the uploaded warm-up LoRAs as the clients' latest."""
    if not uploads:
        return state
    warm, weights = dict(state.warm), dict(state.warm_weight)
    for cid in sorted(uploads):
        factors = keys.of_kind(uploads[cid].tensors, "lora_A", "lora_B")
        warm.update(with_prefix(factors, f"{cid}/"))
        weights[cid] = uploads[cid].weight
    return replace(state, warm=warm, warm_weight=weights, seen=state.seen | frozenset(uploads))


def _allocate(state: FedLEASEState, max_experts: int, seed: int) -> FedLEASEState:
    """Return ``state`` with the clusters, the experts (cluster means) and fresh routers."""
    import torch

    cids = sorted(state.warm_weight)
    labels = choose_clusters(b_distances(_warm_bs(state, cids)), max_experts)
    cluster_of = dict(zip(cids, labels, strict=True))
    M = max(labels) + 1
    folded = {c: expert_units(state.lora, state.rank, _warm_lora(state, c)) for c in cids}
    means = []
    for m in range(M):
        members = [c for c in cids if cluster_of[c] == m]
        weights = [state.warm_weight[c] for c in members]
        means.append(expert_pairs(state.init, [folded[c] for c in members], weights))
    experts: TensorDict = {}
    routers: TensorDict = {}
    for module in keys.modules(state.init):
        for kind, bank in (("lora_A", "experts_A"), ("lora_B", "experts_B")):
            stacked = torch.stack([mean[keys.make(module, kind)] for mean in means])
            experts[keys.make(module, bank)] = stacked  # (M, R, d_in) | (M, d_out, R)
        d_in = int(state.init[keys.make(module, "lora_A")].shape[1])
        for m in range(M):
            g = generator(seed, "fedlease-router", m, module)
            router = (torch.rand(2 * M - 1, d_in, generator=g) * 2 - 1) / math.sqrt(d_in)
            routers[f"{m}/{keys.make(module, 'router')}"] = router  # (2M−1, d_in)
    metrics = {"num_experts": float(M)}
    return replace(state, cluster_of=cluster_of, experts=experts, routers=routers, metrics=metrics)


def _assign_late(
    state: FedLEASEState, joiners: Sequence[int], clustered: Mapping[int, int]
) -> FedLEASEState:
    """Return ``state`` with each late joiner in the cluster of least mean distance to it."""
    members = sorted(clustered)
    cluster_of = dict(state.cluster_of)
    for cid in joiners:
        D = b_distances(_warm_bs(state, [*members, cid]))
        row = D[-1, :-1]  # distances of the joiner to the clustered clients
        mean = [row[[clustered[c] == m for c in members]].mean() for m in range(state.num_experts)]
        cluster_of[cid] = int(np.argmin(mean))
    return replace(state, cluster_of=cluster_of)


def _average_clusters(state: FedLEASEState, uploads: Mapping[int, Upload]) -> FedLEASEState:
    """Return ``state`` with expert and router ``m`` the mean of cluster ``m``'s uploads.

    Weighted by upload weight over the cluster's clients of this round, experts per component in
    expert units (module docstring); clusters without uploads keep theirs. Also records
    ``agg_error`` over all (cluster, layer) pairs.
    """
    if not uploads:
        return replace(
            state, metrics={"num_experts": float(state.num_experts)} if state.cluster_of else {}
        )
    experts, routers = {k: v.clone() for k, v in state.experts.items()}, dict(state.routers)
    ideal, applied = {}, {}
    s = state.lora.scale(state.rank)
    for m in range(state.num_experts):
        ups = {c: u for c, u in uploads.items() if state.cluster_of[c] == m}
        if not ups:
            continue
        cids = sorted(ups)
        weights = [ups[c].weight for c in cids]
        folded = [expert_units(state.lora, state.rank, ups[c].tensors) for c in cids]
        routed = [keys.of_kind(ups[c].tensors, "router") for c in cids]
        router_mean = weighted_mean(routed, weights)
        for module in keys.modules(folded[0]):
            kA, kB = keys.make(module, "lora_A"), keys.make(module, "lora_B")
            EA = experts[keys.make(module, "experts_A")]  # (M, R, d_in)
            EB = experts[keys.make(module, "experts_B")]  # (M, d_out, R)
            old = {kA: EA[m], kB: EB[m]}
            new = expert_pairs(old, folded, weights)
            EA[m], EB[m] = new[kA], new[kB]  # (R, d_in), (d_out, R)
            routers[f"{m}/{keys.make(module, 'router')}"] = router_mean[keys.make(module, "router")]
            rho = max(rank_of(ups[c].tensors, module) for c in cids)  # components averaged now
            ideal[f"{m}/{module}"] = ideal_stack(ups, state.lora, module)
            applied[f"{m}/{module}"] = (EB[m][:, :rho], s * EA[m][:rho])
    metrics = {"agg_error": agg_error(ideal, applied), "num_experts": float(state.num_experts)}
    return replace(state, experts=experts, routers=routers, metrics=metrics)


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FedLEASE)(floats_per_round)  # in _fedlease_experts
