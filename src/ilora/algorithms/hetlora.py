"""HetLoRA: heterogeneous ranks by truncation, self-pruning, sparsity-weighted aggregation.

Cho, Liu, Xu, Fahrezi, Joshi, "Heterogeneous LoRA for Federated Fine-tuning of On-Device
Foundation Models", EMNLP 2024, arXiv 2401.06432. Hooks: ``download`` sends the leading ``r_k``
rows of ``Ā`` / columns of ``B̄`` (global factors live at ``r_max``); ``client_init`` truncates
further to the client's pruned rank kept in ``cstate``; ``loss_term`` adds the self-pruning
regulariser; ``upload`` applies the pruning rule and sends the factors at the (new) rank;
``aggregate`` zero-pads to ``r_max`` and averages with weights ``w_k ∝ ‖B_k A_k‖_F`` (norms
in factor space, one weight per client over all adapted layers), and FedAvg-s the head with the
data weights. Inexact, as FedIT (cross terms, padding dilution); ``agg_error`` shows it.

Choices where the sources are silent or ambiguous:

* ``weighting: norm`` replaces the data weight ``p_k`` by ``w_k`` (the paper);
  ``norm_times_data`` uses ``w_k ∝ p_k ‖B_k A_k‖_F``. If every norm is 0 the data weights are
  used. Norms are of the uploads as averaged (``B_k A_k`` at the global scale, below).
* Scaling (the paper does not say): the global model applies ``s(r_max)``, a client of rank
  ``r`` its own ``s(r)``. With ``rescale_b`` (default) the client receives B times
  ``s(r_max)/s(r_k)``, cuts it to a pruned rank ``q`` times ``s(r_k)/s(q)``, rescales the kept B
  by ``s(r)/s(q)`` when it prunes from ``r`` to ``q`` (so pruning drops the tail and keeps the
  rest of the product), and the server maps an upload of rank ``q`` back by ``s(q)/s(r_max)``:
  every client starts from exactly the global model's leading components, and averages are of
  the products the clients trained. ``rescale_b: false``: every rank applies its own scaling to
  the factors as they are (a rank-2 client of 8 starts at 4x the global adapter's part).
* Self-pruning, a reconstruction (ALGORITHMS.md: the exact rule is [unverified]). For a client at
  rank ``r`` let ``q = max(min_rank, ⌊(1 − prune_fraction)·r⌋)``; the trailing components
  ``q..r`` are the columns ``B[:, q:]`` and rows ``A[q:]``. The regulariser is
  ``gamma · Σ_layers ‖B[:, q:] A[q:]‖_F`` (a group norm of each layer's trailing product). After
  local training the client prunes to rank ``q`` when ``‖tail‖ / ‖B A‖ < prune_threshold``, both
  summed in square over all layers, drops the tail at once (its upload is at rank ``q``) and keeps
  ``q`` in ``cstate`` for later rounds: at most one step per round, never below ``min_rank``.
  The server keeps sending rank ``r_k`` (it does not track pruned ranks) and pads anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING
from typing import Literal

from ilora.algorithms import traffic
from ilora.algorithms._pair_servers import GlobalPairServer
from ilora.algorithms._shared import RESCALE_HELP
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import b_ratio
from ilora.algorithms._shared import global_pair_error
from ilora.algorithms._shared import mean_extras
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms._shared import rank_download
from ilora.algorithms._shared import rank_of
from ilora.algorithms._shared import uploads_to_global
from ilora.algorithms.base import check_at_least
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import fro_norm_sq
from ilora.lora.linalg import resize_rank
from ilora.tensors import weighted_mean
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

RANK = "hetlora/rank"  # cstate: the client's current (possibly pruned) rank, a 0-d int64


@register("hetlora")
@dataclass(frozen=True)
class HetLoRA(GlobalPairServer):
    """HetLoRA (see the module docstring).

    Bytes per client per round (float32), per adapted layer ``(d_out, d_in)``: download
    ``4·(d_out + d_in)·r_k`` (A and B at the client's rank ``r_k``), upload
    ``4·(d_out + d_in)·r'_k`` at its current rank ``r'_k ≤ r_k`` (smaller once pruned); plus
    ``4·n_head`` each way for the head's ``n_head`` floats.
    """

    heterogeneous_ranks = True
    stateful_clients = True

    weighting: Literal["norm", "norm_times_data"] = hyperparameter(
        "norm", "paper", "norm: w_k ∝ ‖B_k A_k‖_F (paper); norm_times_data: w_k ∝ p_k ‖B_k A_k‖_F"
    )
    gamma: float = hyperparameter(
        1e-3,
        "ours",
        "weight of the regulariser on the trailing rank components (ours: the paper's "
        "value is not in our sources)",
    )
    prune_fraction: float = hyperparameter(
        0.25,
        "ours",
        "share of a client's rank that is regularised and pruned (ours: the paper's "
        "pruning step is not in our sources)",
    )
    prune_threshold: float = hyperparameter(
        0.05,
        "ours",
        "prune when ‖trailing BA‖_F / ‖BA‖_F falls below this; 0 = never prune "
        "(ours: the paper's threshold is not in our sources)",
    )
    min_rank: int = hyperparameter(
        1,
        "ours",
        "no client is pruned below this rank (ours: the paper gives no floor, 1 keeps "
        "every client training)",
    )
    rescale_b: bool = hyperparameter(True, "ours", RESCALE_HELP)

    def __post_init__(self) -> None:
        if self.weighting not in ("norm", "norm_times_data"):
            raise ValueError(f"weighting must be norm | norm_times_data, got {self.weighting!r}")
        check_at_least(self, gamma=0)
        if not 0 < self.prune_fraction < 1:
            raise ValueError(f"prune_fraction must be in (0, 1), got {self.prune_fraction}")
        if not 0 <= self.prune_threshold < 1:
            raise ValueError(f"prune_threshold must be in [0, 1), got {self.prune_threshold}")
        check_at_least(self, min_rank=1)

    # ---- server
    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        out = _at_rank(state.tensors, client.rank)
        return rank_download(out, state.lora, state.rank, client.rank, self.rescale_b)

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        mapped = uploads_to_global(uploads, state.lora, state.rank) if self.rescale_b else uploads
        cids, w = sorted(mapped), self.weights(mapped)
        padded = [
            _at_rank(keys.of_kind(mapped[c].tensors, *keys.FACTOR_KINDS), state.rank) for c in cids
        ]
        new = {**weighted_mean(padded, [w[c] for c in cids]), **mean_extras(uploads)}
        return replace(
            state,
            tensors=new,
            metrics={
                "agg_error": global_pair_error(state, uploads, new),
                "upload_rank_mean": _mean_upload_rank(uploads),  # < r_k once clients prune
            },
        )

    def weights(self, uploads: Mapping[int, Upload]) -> dict[int, float]:
        """Return the normalised aggregation weights of the factors by client id."""
        p = normalized_weights(uploads)
        norms = {c: math.sqrt(sum(_layer_norms_sq(u.tensors).values())) for c, u in uploads.items()}
        raw = {
            c: n * (p[c] if self.weighting == "norm_times_data" else 1.0) for c, n in norms.items()
        }
        total = sum(raw.values())
        return {c: v / total for c, v in raw.items()} if total > 0 else p

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        r = min(ctx.client.rank, int(cstate[RANK])) if RANK in cstate else ctx.client.rank
        return LocalSetup(
            factors=self._pruned(ctx.payload.tensors, ctx, ctx.client.rank, r)
        ), cstate

    def loss_term(
        self, params: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> torch.Tensor | None:
        import torch

        if self.gamma == 0:
            return None
        terms = []
        for m in keys.modules(params):
            A, B = params[keys.make(m, "lora_A")], params[keys.make(m, "lora_B")]
            q = self.keep_rank(A.shape[0])
            if q < A.shape[0]:
                terms.append(_fro_norm(B[:, q:], A[q:]))  # (d_out, r - q), (r - q, d_in)
        return self.gamma * torch.stack(terms).sum() if terms else None

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        import torch

        r = min(int(v.shape[0]) for v in keys.of_kind(trained, "lora_A").values())
        q = self.keep_rank(r)
        kept = q if q < r and self.tail_ratio(trained, q) < self.prune_threshold else r
        sent = self._pruned(trained, ctx, r, kept)
        up = Upload(sent, float(ctx.client.num_examples), {"rank": float(kept)})
        return up, {**cstate, RANK: torch.tensor(kept, dtype=torch.int64)}

    def _pruned(self, tensors: TensorDict, ctx: ClientContext, r: int, q: int) -> TensorDict:
        """Return rank-``r`` tensors cut to rank ``q``, B times ``s(r)/s(q)`` with ``rescale_b``.

        The kept components then add the same product at the scaling ``s(q)`` of rank ``q``.
        """
        out = _at_rank(tensors, q)
        if not self.rescale_b or q == r:
            return out
        ratio = b_ratio(ctx.lora, r, q)  # s(r)/s(q)
        return {k: ratio * v if keys.kind_of(k) == "lora_B" else v for k, v in out.items()}

    # ---- math
    def keep_rank(self, r: int) -> int:
        """Return ``max(min_rank, ⌊(1 − prune_fraction)·r⌋)``: the components kept when pruning."""
        return max(self.min_rank, math.floor((1 - self.prune_fraction) * r + 1e-9))

    @staticmethod
    def tail_ratio(factors: TensorDict, q: int) -> float:
        """Return ``sqrt(Σ_l ‖B_l[:, q:] A_l[q:]‖²_F / Σ_l ‖B_l A_l‖²_F)`` (inf when ``BA = 0``)."""
        tail = sum(_layer_norms_sq(factors, q).values())
        full = sum(_layer_norms_sq(factors).values())
        return math.sqrt(tail / full) if full > 0 else math.inf


def _at_rank(d: Mapping[str, torch.Tensor], r: int) -> TensorDict:
    """Return ``d`` with each A/B truncated or zero-padded to rank ``r``; other keys as they are."""
    return {k: resize_rank(v, r, keys.kind_of(k)) for k, v in d.items()}


def _layer_norms_sq(factors: Mapping[str, torch.Tensor], q: int = 0) -> dict[str, float]:
    """Return ``{module: ‖B[:, q:] A[q:]‖²_F}`` in factor space (``q = 0``: the whole product)."""
    return {
        m: fro_norm_sq(factors[keys.make(m, "lora_B")][:, q:], factors[keys.make(m, "lora_A")][q:])
        for m in keys.modules(keys.of_kind(factors, "lora_A"))
    }  # (d_out, r - q), (r - q, d_in)


def _fro_norm(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Return a differentiable ``‖B A‖_F`` in factor space, with gradient 0 (not NaN) at 0."""
    import torch

    sq = ((B.T @ B) * (A @ A.T)).sum()  # (t, t) ⊙ (t, t) -> ()
    return torch.where(sq > 0, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq))


def _mean_upload_rank(uploads: Mapping[int, Upload]) -> float:
    """Return the mean rank of the uploaded factors (the bytes up follow it linearly)."""
    ranks = [rank_of(u.tensors, keys.modules(u.tensors)[0]) for u in uploads.values()]
    return sum(ranks) / len(ranks)


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
@traffic.formula(HetLoRA)
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """Down at ``r_k``; up at the client's current rank: ``r_k`` until self-pruning shrinks it.

    A run's ``upload_rank_mean`` (reported per round) gives the round's total exactly (linear
    in the rank).
    """
    up = c.hp.get("upload_rank_mean", c.rank)
    return s.pair(c.rank) + s.n_head, s.pair(up) + s.n_head
