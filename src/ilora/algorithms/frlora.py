"""FRLoRA: restart every round from the principal factors, merge the update into the weights.

Yan, Feng, Zuo, Zhu, Goh, Liu, "Federated Residual Low-Rank Adaption of Large Language Models",
ICLR 2025 (OpenReview e0rQRMUhs7; no arXiv version).

Principal (PiSSA-style) init, once per layer, of the pre-trained ``W (d_out, d_in) = U Σ Vᵀ``:
``B0 = U_r (Σ_r/s)^{1/2}`` ``(d_out, r)``, ``A0 = (Σ_r/s)^{1/2} V_rᵀ`` ``(r, d_in)`` and the
residual base ``W_res = W − s B0 A0``, so the initial model is ``W`` itself. The global model is
``W + R`` (``R`` a dense ``(d_out, d_in)`` accumulated update, 0 at the start). One round:

1. every client restarts from the **same** ``(B0, A0)`` on top of ``W + R − s B0 A0`` (the
   paper's client-drift fix) and trains ``(B, A)`` and the head;
2. the server averages ``B̄ = Σ p_k B_k``, ``Ā = Σ p_k A_k`` and merges the update in full space,
   ``R ← R + s (B̄Ā − B0 A0)``: ``(d_out, r) @ (r, d_in) -> (d_out, d_in)``, so the accumulated
   update has growing rank; the head is FedAvg-ed.

Hooks: ``server_init`` the principal factors at ``r_max`` (kept for the merge), ``R = 0`` and the
head; ``download`` ``R`` and the head; ``client_init`` rebuilds ``(B0, A0)`` from ``ctx.base``
(the same deterministic SVD as the server, signs fixed; cached in ``cstate`` under
``principal/``, a pure function of the frozen weights, so each client runs the SVD once) and
installs the residual ``R − s B0 A0`` under them; default ``upload`` (A_k, B_k, head);
``aggregate`` the merge and the head's FedAvg; ``export`` ``R`` and the head (no factors: the
global model is ``W + R``).

Choices where the sources are silent or differ:

* ``merge: factors`` (default) is the paper's product of averages; ``merge: exact`` merges the
  average of products ``Σ p_k s_k (B_k A_k − B0_k A0_k)`` instead (FedEx-LoRA's exactness, not
  in the paper). ``agg_error`` compares the merged update with that exact one:
  ``‖ΔW − Σ p_k s_k (B_k A_k − B0_k A0_k)‖_F / ‖Σ p_k s_k (B_k A_k − B0_k A0_k)‖_F``, i.e. the
  clients' products measured from their common start (each client's model is
  ``W + R − s_k B0_k A0_k + s_k B_k A_k``), over all layers; ~1e-7 (float32) for ``exact``.
* Weights ``p_k`` (the released code overwrites the sample counts by 1: ``fed.weighting:
  uniform`` reproduces it).
* Download: the dense ``R`` (``d_out·d_in`` per layer). The paper notes that ``(B̄, Ā)`` suffice
  for a client holding the previous model, but a client that missed rounds would need every
  missed pair (and ``merge: exact`` has no such pair), so our clients keep no merged model and
  receive ``R``; they rebuild ``(B0, A0)`` themselves from the frozen weights.
* SVD signs: each principal pair ``(u_i, v_i)`` is flipped so that the largest-magnitude entry of
  ``u_i`` is positive, so server and clients agree on ``(B0, A0)`` whatever signs LAPACK picks.
  Computed in float64 from the float32 weights, stored float32.
* The released code keeps each client's AdamW and its cosine schedule across rounds (its horizon
  is ``len(loader)·rounds`` while 10 steps run per round); our engine builds a fresh optimizer
  every round, as for every method. Its optional ``fedreg`` term is not implemented.

Heterogeneous ranks (our extension; the paper is homogeneous): client ``k`` restarts from the
leading ``r_k`` principal components at its own scaling, ``B0_k = U_{r_k} (Σ_{r_k}/s_k)^{1/2}``,
``A0_k = (Σ_{r_k}/s_k)^{1/2} V_{r_k}ᵀ`` (so ``s_k B0_k A0_k = U_{r_k} Σ_{r_k} V_{r_k}ᵀ``), over
``W + R − s_k B0_k A0_k``: every client starts from the global model. In the scale-folded
coordinates ``B̃ = √s_k B``, ``Ã = √s_k A`` the starts are nested (``U Σ^{1/2}`` truncated), so
``merge: factors`` zero-pads them to ``r_max`` and merges
``(Σ p_k B̃_k)(Σ p_k Ã_k) − (Σ p_k B̃0_k)(Σ p_k Ã0_k)``: zero when no client moved, the paper's
``s (B̄Ā − B0 A0)`` for equal ranks, and diluted like FedIT's padding for mixed ranks.
``merge: exact`` is exact for any mix of ranks.

Bytes per client per round (float32), per adapted layer ``(d_out, d_in)`` at the client's rank
``r``: download ``4·d_out·d_in`` (the dense ``R``), upload ``4·r·(d_out + d_in)`` (B and A);
plus ``4·n_head`` each way for the head's ``n_head`` floats.
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
from ilora.algorithms._shared import dense_agg_error
from ilora.algorithms._shared import head_of
from ilora.algorithms._shared import layer_shapes
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import mean_extras
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms._shared import rank_of
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import pad_rank
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

PRINCIPAL = "principal/"  # cstate: the client's cached scale-free principal factors


@dataclass(frozen=True)
class FRLoRAState:
    """FRLoRA's server state.

    Residuals ``R`` and head (the global model ``W + R``), the scale-free principal factors
    ``U Σ^{1/2}`` / ``Σ^{1/2} Vᵀ`` at ``rank`` (as ``<module>.lora_B`` / ``lora_A``), the run's
    spec and the last aggregation's metrics.
    """

    residual: TensorDict
    head: TensorDict
    principal: TensorDict
    lora: LoRASpec
    rank: int
    metrics: dict[str, float] = field(default_factory=dict)


@register("frlora")
@dataclass(frozen=True)
class FRLoRA(Algorithm[FRLoRAState]):
    """FRLoRA (see the module docstring)."""

    heterogeneous_ranks = True
    stateful_clients = True  # only a cache of the client's principal factors (see client_init)

    merge: Literal["factors", "exact"] = hyperparameter(
        "factors",
        "paper",
        "factors: s(B̄Ā − B0A0), the paper's product of averages; "
        "exact: Σ p_k s_k (B_k A_k − B0_k A0_k)",
    )

    def __post_init__(self) -> None:
        if self.merge not in ("factors", "exact"):
            raise ValueError(f"merge must be factors | exact, got {self.merge!r}")

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FRLoRAState:
        import torch

        r = max_rank(clients)
        residual = {
            keys.make(m, "residual"): torch.zeros(d_out, d_in)  # (d_out, d_in)
            for m, (d_out, d_in) in layer_shapes(template).items()
        }
        head = {k: v.clone() for k, v in head_of(template).items()}
        return FRLoRAState(residual, head, principal_factors(template, r), lora, r)

    def download(self, state: FRLoRAState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        return Payload({**state.residual, **state.head})

    def aggregate(
        self, state: FRLoRAState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FRLoRAState:
        import torch

        p = normalized_weights(uploads)
        modules = keys.modules(state.residual)
        starts = {  # each client's restart point, as it built it
            c: start_factors(state.principal, rank_of(u.tensors, modules[0]), state.lora)
            for c, u in uploads.items()
        }
        new: TensorDict = {}
        ideal: TensorDict = {}
        applied: TensorDict = {}
        for m in modules:
            k = keys.make(m, "residual")
            trained = {c: _folded(uploads[c].tensors, state.lora, m) for c in sorted(uploads)}
            start = {c: _folded(starts[c], state.lora, m) for c in sorted(uploads)}
            ideal[m] = _mean_of_products(trained, p) - _mean_of_products(start, p)
            if self.merge == "exact":
                delta = ideal[m]
            else:
                delta = _product_of_means(trained, p, state.rank) - _product_of_means(
                    start, p, state.rank
                )
            old = state.residual[k].to(torch.float64)  # (d_out, d_in)
            new[k] = (old + delta).float()
            applied[m] = new[k].to(torch.float64) - old
        metrics = {"agg_error": dense_agg_error(ideal, applied)}
        return replace(state, residual=new, head=mean_extras(uploads), metrics=metrics)

    def export(self, state: FRLoRAState) -> LocalSetup:
        return LocalSetup(factors=dict(state.head), residual=dict(state.residual))

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        import torch

        r = ctx.client.rank
        cached = strip_prefix(cstate, PRINCIPAL)
        if not cached or rank_of(cached, keys.modules(cached)[0]) != r:
            cached = principal_factors(ctx.base, r)  # the same SVD as the server's, truncated
            cstate = {**cstate, **with_prefix(cached, PRINCIPAL)}
        start = start_factors(cached, r, ctx.lora)
        s = ctx.lora.scale(r)
        residual: TensorDict = {}
        for m in keys.modules(start):
            k = keys.make(m, "residual")
            B0 = start[keys.make(m, "lora_B")].to(torch.float64)  # (d_out, r)
            A0 = start[keys.make(m, "lora_A")].to(torch.float64)  # (r, d_in)
            # (d_out, r) @ (r, d_in) -> (d_out, d_in): W + R − s B0 A0 + s B0 A0 = W + R
            residual[k] = (ctx.payload.tensors[k].to(torch.float64) - s * (B0 @ A0)).float()
        factors = {**start, **head_of(ctx.payload.tensors)}
        return LocalSetup(factors, residual=residual), cstate


def principal_factors(base: Mapping[str, torch.Tensor], r: int) -> TensorDict:
    """Return the scale-free principal factors of every ``<module>.base`` at rank ``r``.

    ``<module>.lora_B = U_r Σ_r^{1/2}`` ``(d_out, r)`` and ``<module>.lora_A = Σ_r^{1/2} V_rᵀ``
    ``(r, d_in)`` of the thin SVD of ``W`` (float64, stored float32), each pair's sign fixed so
    that the largest-magnitude entry of ``u_i`` is positive. A prefix of the rank-``r_max``
    result equals the rank-``r`` result bitwise.

    Raises:
        ValueError: if ``r`` exceeds ``min(d_out, d_in)`` of a layer.

    """
    import torch

    out: TensorDict = {}
    for module, (d_out, d_in) in layer_shapes(base).items():
        if r > min(d_out, d_in):
            raise ValueError(
                f"rank {r} exceeds min(d_out, d_in) = {min(d_out, d_in)} of {module}; "
                "lower lora.rank/lora.ranks"
            )
        W = base[keys.make(module, "base")].to(torch.float64)  # (d_out, d_in)
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)  # (d_out, m), (m,), (m, d_in)
        pivot = U.gather(0, U.abs().argmax(dim=0, keepdim=True))  # (1, m)
        sign = torch.where(pivot < 0, -1.0, 1.0).to(U.dtype)  # (1, m)
        root = S.sqrt()  # (m,)
        out[keys.make(module, "lora_B")] = ((U * sign) * root)[:, :r].float().contiguous()
        out[keys.make(module, "lora_A")] = ((Vh * sign.T) * root[:, None])[:r].float().contiguous()
    return out


def start_factors(principal: Mapping[str, torch.Tensor], r: int, lora: LoRASpec) -> TensorDict:
    """Return a rank-``r`` client's restart point ``(B0, A0)``.

    The leading ``r`` components of the scale-free principal factors divided by ``√s(r)``, so
    ``s(r) B0 A0 = U_r Σ_r V_rᵀ``.
    """
    import torch

    root = math.sqrt(lora.scale(r))
    out: TensorDict = {}
    for k, v in principal.items():
        lead = v[:r] if keys.kind_of(k) == "lora_A" else v[:, :r]  # (r, d_in) or (d_out, r)
        out[k] = (lead.to(torch.float64) / root).float().contiguous()
    return out


def _folded(
    tensors: Mapping[str, torch.Tensor], lora: LoRASpec, module: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(√s_k B, √s_k A)`` of ``module`` in float64: ``B̃ Ã = s_k B A``."""
    import torch

    A = tensors[keys.make(module, "lora_A")].to(torch.float64)  # (r_k, d_in)
    B = tensors[keys.make(module, "lora_B")].to(torch.float64)  # (d_out, r_k)
    root = math.sqrt(lora.scale(A.shape[0]))
    return root * B, root * A


def _mean_of_products(
    pairs: Mapping[int, tuple[torch.Tensor, torch.Tensor]], p: Mapping[int, float]
) -> torch.Tensor:
    """Return ``Σ_k p_k B̃_k Ã_k`` ``(d_out, d_in)``."""
    # (d_out, r_k) @ (r_k, d_in) -> (d_out, d_in)
    import torch

    return torch.stack([p[c] * (B @ A) for c, (B, A) in sorted(pairs.items())]).sum(dim=0)


def _product_of_means(
    pairs: Mapping[int, tuple[torch.Tensor, torch.Tensor]], p: Mapping[int, float], r: int
) -> torch.Tensor:
    """Return ``(Σ_k p_k pad(B̃_k)) (Σ_k p_k pad(Ã_k))`` ``(d_out, d_in)``, padded to rank ``r``."""
    import torch

    items = sorted(pairs.items())
    B_bar = torch.stack([p[c] * pad_rank(B, r, "lora_B") for c, (B, _) in items]).sum(dim=0)
    A_bar = torch.stack([p[c] * pad_rank(A, r, "lora_A") for c, (_, A) in items]).sum(dim=0)
    # B_bar (d_out, r), A_bar (r, d_in)
    return B_bar @ A_bar  # (d_out, r) @ (r, d_in) -> (d_out, d_in)


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FRLoRA)(traffic.dense_down_pair_up)  # R down; B0, A0 rebuilt by SVD
