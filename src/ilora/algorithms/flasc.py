"""FLASC: dense local LoRA training, sparse communication, server Adam on the mean delta.

Kuo, Raje, Rajesh, Smith, "Federated LoRA with Sparse Communication", arXiv 2406.05233.

The server keeps one global LoRA ``(B, A)`` per layer (``B (d_out, r)``, ``A (r, d_in)``) and the
head, dense. One round, with ``N`` the number of exchanged floats (all factors and the head):

1. download: flatten every tensor into one vector ``x (N,)`` and keep its top
   ``k_dl = max(1, ⌊d_dl·N⌋)`` entries by ``|x|`` (one global top-k; the others are zero);
   the client starts from that masked model ``x̃``;
2. the client trains every entry densely (the engine's loop; the paper uses SGD with momentum);
3. upload: its delta ``Δ_k = x̃ − x_k`` (masked start minus trained), keeping its top
   ``k_ul = max(1, ⌊d_ul·N⌋)`` entries by ``|Δ_k|``;
4. server: ``g = Σ p_k Δ_k`` is a pseudo-gradient for Adam, ``x ← x − lr·m̂/(√v̂ + ε)`` with
   ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``, ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)``.

Sparse encoding (what travels): ``flasc/values`` ``(k,)`` float32 and ``flasc/indices`` ``(k,)``
int32 (ascending positions in the flattened vector), or, when ``2k ≥ N`` (density ≥ 1/2, where
indices would cost more than the zeros), the masked vector itself as ``flasc/dense`` ``(N,)``.
The flattening order is the sorted keys of the client's tensors; the download carries that
layout (keys and shapes) as a JSON string in ``Payload.config["flasc/layout"]`` (metadata like the
keys themselves, no tensor bytes); the server rebuilds an upload's layout from the client's rank.

Hooks: ``server_init`` the shared standard LoRA init at ``r_max`` (``lora-init``), zero Adam
moments; ``download`` the sparse encoding of the client's (rank-truncated) tensors; ``client_init``
decodes it into the dense masked start; ``upload`` encodes the top-``k_ul`` delta;
``aggregate`` decodes, zero-pads to ``r_max``, averages, Adam step; ``export`` the global model.

Choices where the sources are silent or differ:

* Weights ``p_k`` (the paper and code divide the summed deltas by the number of sampled
  clients: ``fed.weighting: uniform`` reproduces it).
* The paper says Adam; the released code builds ``torch.optim.AdamW`` with its default weight
  decay 0.01 on the server. We follow the paper (no weight decay); ``server_lr`` 1e-3 is the
  code's default (5e-3 in its heterogeneity script).
* ``k = max(1, ⌊d·N⌋)`` as the code's ``int(numel·density)`` (never 0 entries); ties in ``|x|``
  go to the lower position (stable sort), so the mask is deterministic.
* The head is sparsified like every other trainable tensor (the code's main script masks all
  trainable parameters; its heterogeneity script leaves non-LoRA tensors dense). With
  ``train.train_head: false`` the head is still masked, which zeroes most of a frozen head: keep
  the head trainable with this method.
* ``export_masked`` (default, the code's ``--eval-masked true``): the global model is evaluated
  as a client of the largest rank receives it (masked at ``d_dl``); ``false`` evaluates the
  dense server model. The density-decay schedules, the optional client-side freezing of the
  masked entries and the DP variant are not implemented.
* ``agg_error`` is not reported (``{}``): the server never sees the clients' factors, only
  sparsified deltas, and its update is an Adam step, not an average of products.

Heterogeneous ranks (HetLoRA-style, as the paper's rank-heterogeneous baseline): a client of rank
``r_k`` receives the top-k of the leading ``r_k`` components (rows of A, columns of B) and the
head, ``N_k = Σ r_k (d_out + d_in) + n_head``; its delta is zero-padded to ``r_max`` before
averaging. Where we depart from the released code: its rank-heterogeneous baseline masks
components of one rank-16 module, so every tier applies the global ``α/16``; here a client holds
a rank-``r_k`` adapter and the layer applies ``s(r_k)``. With ``rescale_b`` (default) B is sent
times ``s(r_max)/s(r_k)`` before the top-k and the delta's B is mapped back by
``s(r_k)/s(r_max)``, so the client's model is the released code's (the leading ``r_k``
components at the global scale; the top-k then ranks B's entries at that client's scale);
``rescale_b: false`` applies ``s(r_k)`` to the cut factors as they are (``s(r_k)/s(r_max)`` times
the global part, 4x for rank 4 of 16). FLASC's own answer to system heterogeneity, density
tiers, is not offered: ``ClientInfo`` carries no tier; the rank tiers play that role.

Bytes per client per round (float32 values and int32 indices, 4 bytes each): with
``N = Σ_layers r·(d_out + d_in) + n_head`` at the client's rank ``r`` and ``k = max(1, ⌊d·N⌋)``,
each direction costs ``4·2k`` (values and indices) when ``2k < N`` and ``4·N`` otherwise, with
``d = density_down`` for the download and ``density_up`` for the upload.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._flasc_sparse import Layout
from ilora.algorithms._flasc_sparse import decode
from ilora.algorithms._flasc_sparse import encode
from ilora.algorithms._flasc_sparse import flatten
from ilora.algorithms._flasc_sparse import layout_of
from ilora.algorithms._flasc_sparse import size_of
from ilora.algorithms._flasc_sparse import unflatten
from ilora.algorithms._shared import RESCALE_HELP
from ilora.algorithms._shared import b_to_client
from ilora.algorithms._shared import b_to_global
from ilora.algorithms._shared import global_factor_state
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms._shared import truncated
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import resize_rank
from ilora.lora.spec import LoRASpec
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

LAYOUT = "flasc/layout"  # Payload.config: JSON [[key, shape], ...] of the flattened tensors


@dataclass(frozen=True)
class FLASCState:
    """FLASC's server state.

    The dense global factors at ``rank`` and head, Adam's moments and step count, every client's
    rank (to rebuild an upload's layout) and the run's spec.
    """

    tensors: TensorDict
    m: TensorDict
    v: TensorDict
    step: int
    ranks: dict[int, int]
    lora: LoRASpec
    rank: int
    metrics: dict[str, float] = field(default_factory=dict)


@register("flasc")
@dataclass(frozen=True)
class FLASC(Algorithm[FLASCState]):
    """FLASC (see the module docstring)."""

    heterogeneous_ranks = True

    density_down: float = hyperparameter(
        0.25,
        "paper",
        "share of entries kept in the download, in (0, 1] (1/4: one of the paper's densities)",
    )
    density_up: float = hyperparameter(
        0.25,
        "paper",
        "share of delta entries kept in the upload, in (0, 1] (1/4: one of the paper's densities)",
    )
    server_lr: float = hyperparameter(
        1e-3, "code", "server Adam learning rate (released code: 1e-3)"
    )
    beta1: float = hyperparameter(
        0.9, "code", "server Adam beta1, in [0, 1) (released code: torch's default)"
    )
    beta2: float = hyperparameter(
        0.999, "code", "server Adam beta2, in [0, 1) (released code: torch's default)"
    )
    eps: float = hyperparameter(
        1e-8, "code", "server Adam epsilon, > 0 (released code: torch's default)"
    )
    export_masked: bool = hyperparameter(
        True, "code", "evaluate the global model masked at density_down (code) or dense"
    )
    rescale_b: bool = hyperparameter(True, "ours", RESCALE_HELP)

    def __post_init__(self) -> None:
        for name in ("density_down", "density_up"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.server_lr <= 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FLASCState:
        import torch

        init = global_factor_state(template, clients, lora, seed)
        zeros = {k: torch.zeros_like(v) for k, v in init.tensors.items()}
        ranks = {c.cid: c.rank for c in clients}
        return FLASCState(init.tensors, zeros, dict(zeros), 0, ranks, lora, init.rank)

    def download(self, state: FLASCState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        local = truncated(state.tensors, client.rank)
        if self.rescale_b:
            local = b_to_client(local, state.lora, state.rank, client.rank)
        layout = layout_of(local)
        encoded = encode(flatten(local, layout), self.density_down)
        return Payload(encoded, {LAYOUT: json.dumps(layout)})

    def aggregate(
        self, state: FLASCState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FLASCState:
        import torch

        p = normalized_weights(uploads)
        grad = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in state.tensors.items()}
        for cid in sorted(uploads):
            layout = layout_of(truncated(state.tensors, state.ranks[cid]))
            delta = unflatten(decode(uploads[cid].tensors, size_of(layout)), layout)
            if self.rescale_b:
                delta = b_to_global(delta, state.lora, state.rank)
            for k, d in delta.items():  # zero-pad a rank-r_k delta to r_max
                grad[k] += p[cid] * resize_rank(d.to(torch.float64), state.rank, keys.kind_of(k))
        step = state.step + 1
        tensors, m, v = adam_step(
            state.tensors, grad, state.m, state.v, step, self.adam_hyperparameters()
        )
        return replace(state, tensors=tensors, m=m, v=v, step=step, metrics={})

    def adam_hyperparameters(self) -> tuple[float, float, float, float]:
        """Return the server Adam's ``(lr, beta1, beta2, eps)``."""
        return self.server_lr, self.beta1, self.beta2, self.eps

    def export(self, state: FLASCState) -> LocalSetup:
        if not self.export_masked:
            return LocalSetup(factors=dict(state.tensors))
        layout = layout_of(state.tensors)
        flat = decode(encode(flatten(state.tensors, layout), self.density_down), size_of(layout))
        return LocalSetup(factors=unflatten(flat, layout))

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        return LocalSetup(factors=_received(ctx.payload)), cstate

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        start = _received(ctx.payload)
        layout = layout_of(start)
        delta = flatten(start, layout) - flatten(trained, layout)  # masked start − trained
        return Upload(encode(delta, self.density_up), float(ctx.client.num_examples)), cstate


def _received(payload: Payload) -> TensorDict:
    """Return the dense masked tensors a download decodes to."""
    layout: Layout = [(k, tuple(shape)) for k, shape in json.loads(str(payload.config[LAYOUT]))]
    return unflatten(decode(payload.tensors, size_of(layout)), layout)


# ---- server optimizer
def adam_step(
    params: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    m: Mapping[str, torch.Tensor],
    v: Mapping[str, torch.Tensor],
    step: int,
    hyper: tuple[float, float, float, float],
) -> tuple[TensorDict, TensorDict, TensorDict]:
    """Return ``(params, m, v)`` after one Adam step (``t = step`` ≥ 1) on ``grads``.

    ``hyper`` is ``(lr, β₁, β₂, ε)``.

    ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``, ``x ← x − lr·m̂/(√v̂ + ε)`` with the bias
    corrections ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)`` (``torch.optim.Adam``); float64 math,
    float32 results.
    """
    import torch

    lr, beta1, beta2, eps = hyper
    new_p: TensorDict = {}
    new_m: TensorDict = {}
    new_v: TensorDict = {}
    for k in sorted(params):
        g = grads[k].to(torch.float64)
        mk = beta1 * m[k].to(torch.float64) + (1 - beta1) * g
        vk = beta2 * v[k].to(torch.float64) + (1 - beta2) * g * g
        m_hat, v_hat = mk / (1 - beta1**step), vk / (1 - beta2**step)
        new_p[k] = (params[k].to(torch.float64) - lr * m_hat / (v_hat.sqrt() + eps)).float()
        new_m[k], new_v[k] = mk.float(), vk.float()
    return new_p, new_m, new_v


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
@traffic.formula(FLASC)
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """One global top-k over the client's factors and head each way (``density_down/up``)."""
    n = s.pair(c.rank) + s.n_head
    down, up = c.hp.get("density_down", 0.25), c.hp.get("density_up", 0.25)
    return traffic.top_k_message(n, down), traffic.top_k_message(n, up)
