"""ILoRA: QR init, concatenated-QR aggregation, rank-aware control variates.

Zhou, Liu, Shang, arXiv 2511.16069.

1. **QR-based orthonormal init** (client, first use of a rank): ``Q, R = QR(W0)``,
   ``B = Q[:, :r_k]``, ``A = R[:r_k]``, optionally rescaled so that
   ``‖BA‖_F = init_rms·sqrt(d_out d_in)``
   (the released code: 1e-4), and the frozen base is offset by ``−o·BA`` (residual). The default
   offset ``o = s(r_k) = α/r_k`` keeps the initial model exactly ``W0``; ``init_offset: one`` is
   the released code's ``o = 1``. Every client's basis is a leading part of the same QR, so all
   clients start in one nested subspace.
2. **Concatenated aggregation** (server): ``B_c = [B_1 … B_K]`` ``(d_out, Σr)``,
   ``A_c = [p_1 s_1 A_1; …]`` ``(Σr, d_in)``, so ``B_c A_c = ΔW = Σ p_k s_k B_k A_k`` exactly.
   ``redistribute: svd`` (default) never forms ``ΔW``: ``QR(B_c)``, SVD of the ``(Σr, d_in)``
   core, and client ``j`` gets the best rank-``r_j`` factors ``B_j = U_{r_j}`` (orthonormal),
   ``A_j = S_{r_j} V_{r_j}ᵀ / s_j``; exact whenever ``r_j ≥ rank(ΔW)``. ``redistribute:
   qr_literal`` is the released code: dense ``QR(ΔW)``, leading columns. ``fold_scaling: false``
   reproduces the released code's aggregation of raw ``B_k A_k`` (no ``s_k``, no ``÷ s_j``).
   The head is FedAvg-ed. The server keeps factors at ``r_max``; the global model uses them.
3. **Rank-aware control variates** (``control_variates``, registered as ``ilora-s``): SCAFFOLD
   option I inside AdamW/SGD. Server control ``c`` at ``r_max`` shapes, client control ``c_k`` at
   ``r_k``; the client receives ``ĉ = trunc_{r_k}(c)``, corrects every gradient ``g ← g + ĉ − c_k``
   before the optimizer step, sets ``c_k⁺ = ∇F_k(x)`` (the mean local gradient at the received
   point, correctly scaled: a mean over examples, not the released code's ÷ batch size) and uploads
   ``Δc_k = c_k⁺ − c_k``; the server zero-pads and sets ``c ← c + (1/N) Σ pad(Δc_k)``.

ILoRA-S is our reading of the paper's second row: ILoRA plus the control variates (the released
code's only switch on top of QR init and concatenated aggregation is ``--use_control``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

import torch

from ilora.algorithms._robust_products import median_extras, median_of_products
from ilora.algorithms._shared import max_rank, mean_extras, normalized_weights
from ilora.algorithms.base import Algorithm, register
from ilora.lora import keys
from ilora.lora.linalg import (
    error_terms,
    principal_factors_of_sum,
    qr_init,
    qr_of_dense,
    resize_rank,
    stack,
)
from ilora.lora.memo import PairMemo
from ilora.lora.spec import LoRASpec
from ilora.seeding import generator
from ilora.tensors import strip_prefix, with_prefix
from ilora.types import (
    ClientContext,
    ClientInfo,
    LocalSetup,
    Payload,
    RoundInfo,
    TensorDict,
    Upload,
)

CV = "cv/"
# every client_init rebuilds the same QR init from the same frozen base: computed once per
# weight and rank (64 MiB holds the rank-16 factors of about 500 layers of MiniLM's size)
_QR_MEMO = PairMemo(max_bytes=64 << 20)
Terms = tuple[list[torch.Tensor], list[torch.Tensor], list[float]]  # B_k, A_k, c_k per client


@dataclass(frozen=True)
class ILoRAState:
    """ILoRA's server state.

    Global factors at ``rank`` (empty before the first aggregation), head, control ``cv``
    (empty without control variates), the QR-init factors at ``rank`` that offset the global
    model's base, and the last aggregation's metrics.
    """

    factors: TensorDict
    head: TensorDict
    control: TensorDict
    init: TensorDict
    lora: LoRASpec
    rank: int
    num_clients: int
    metrics: dict[str, float] = field(default_factory=dict)


@register("ilora-s", preset={"control_variates": True})
@register("ilora")
@dataclass(frozen=True)
class ILoRA(Algorithm[ILoRAState]):
    """ILoRA and ILoRA-S (see the module docstring).

    Bytes per client per round, float32, per adapted layer ``(d_out, d_in)`` at the client's
    rank ``r``: upload ``4·r·(d_out + d_in)`` (B and A); download the same, except in round 1,
    where only the head is sent (every client builds the same QR init from the base weights);
    plus ``4·n_head`` each way for the head. ILoRA-S adds the control variates at the same
    shapes: ``c`` down and ``Δc_k`` up, ``4·(r·(d_out + d_in) + n_head)`` each way (from round 1).
    """

    heterogeneous_ranks = True
    multiplies_uploads = True  # B_c A_c = Σ p_k s_k B_k A_k
    stateful_clients = True

    control_variates: bool = field(
        default=False, metadata={"help": "rank-aware SCAFFOLD control variates (ILoRA-S)"}
    )
    redistribute: Literal["svd", "qr_literal"] = field(
        default="svd",
        metadata={
            "help": "svd: best rank-r factors in factor space; qr_literal: released code's "
            "dense QR and leading columns"
        },
    )
    fold_scaling: bool = field(
        default=True,
        metadata={"help": "aggregate s_k B_k A_k and send A/s_j (false: released code)"},
    )
    init_rms: float = field(
        default=1e-4, metadata={"help": "RMS of the initial BA (released code: 1e-4); 0 = raw Q, R"}
    )
    init_offset: Literal["alpha_over_r", "one"] = field(
        default="alpha_over_r",
        metadata={
            "help": "base offset of the QR init: alpha_over_r keeps W0 exactly; one = released"
        },
    )
    cv_batches: int = field(
        default=0, metadata={"help": "local batches averaged for c_k+ (0 = one pass over all data)"}
    )
    robust_products: Literal["none", "median"] = field(
        default="none",
        metadata={
            "help": "ours: median aggregates the coordinate-wise median of the clients' dense "
            "products s_k B_k A_k (and heads), then the best rank-r factors (Byzantine-robust, "
            "3+ uploads); none = the paper's weighted concatenation"
        },
    )

    def __post_init__(self) -> None:
        if self.init_rms < 0:
            raise ValueError(f"init_rms must be >= 0, got {self.init_rms}")
        if self.cv_batches < 0:
            raise ValueError(f"cv_batches must be >= 0, got {self.cv_batches}")

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> ILoRAState:
        r = max_rank(clients)
        base = keys.of_kind(template, "base")
        init = self._qr_factors(base, r)
        head = {k: v.clone() for k, v in keys.of_kind(template, "param").items()}
        control: TensorDict = {}
        if self.control_variates:
            shapes = {**init, **head}
            control = {k: torch.zeros_like(v) for k, v in shapes.items()}
        return ILoRAState({}, head, control, init, lora, r, len(clients))

    def download(self, state: ILoRAState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        r = client.rank
        s = state.lora.scale(r) if self.fold_scaling else 1.0
        out: TensorDict = {}
        for k, v in state.factors.items():
            t = resize_rank(v, r, keys.kind_of(k))
            out[k] = (t / s).contiguous() if keys.kind_of(k) == "lora_A" else t
        control = {k: resize_rank(v, r, keys.kind_of(k)) for k, v in state.control.items()}
        return Payload({**out, **state.head, **with_prefix(control, CV)})

    def aggregate(
        self, state: ILoRAState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> ILoRAState:
        p = normalized_weights(uploads)
        factors: TensorDict = {}
        err_sq = norm_sq = 0.0
        robust = self.robust_products == "median" and len(uploads) >= 3
        for m in keys.modules(state.init):
            terms = self._terms(state.lora, uploads, p, m, fold=self.fold_scaling)
            if robust:
                terms = median_of_products(terms, p, uploads)
            B, A, tail = self._refactor(terms, state.rank, rnd, m)
            factors[keys.make(m, "lora_B")], factors[keys.make(m, "lora_A")] = B, A
            if tail is not None:  # Eckart–Young: the error of the best rank-r factors is the tail
                err_sq, norm_sq = err_sq + tail[0], norm_sq + tail[1]
            else:
                ideal = stack(*self._terms(state.lora, uploads, p, m, fold=True))
                s_g = 1.0 if self.fold_scaling else state.lora.scale(state.rank)
                e, n = error_terms(ideal, (B, s_g * A))
                err_sq, norm_sq = err_sq + e, norm_sq + n
        control = self._update_control(state, uploads)
        metrics = {"agg_error": math.sqrt(err_sq / norm_sq) if norm_sq > 0 else 0.0}
        head = median_extras(uploads) if robust else mean_extras(uploads)
        return replace(state, factors=factors, head=head, control=control, metrics=metrics)

    def export(self, state: ILoRAState) -> LocalSetup:
        if not state.factors:
            return LocalSetup(factors=dict(state.head))
        s = state.lora.scale(state.rank) if self.fold_scaling else 1.0
        factors = {
            k: (v / s).contiguous() if keys.kind_of(k) == "lora_A" else v
            for k, v in state.factors.items()
        }
        residual = self._offset(state.init, state.lora.scale(state.rank))
        return LocalSetup(factors={**factors, **state.head}, residual=residual)

    def round_metrics(self, state: ILoRAState) -> dict[str, float]:
        return dict(state.metrics)

    def start_gradient_batches(self) -> int | None:
        return self.cv_batches if self.control_variates else None

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        init = self._qr_factors(keys.of_kind(ctx.base, "base"), ctx.client.rank)
        received = {k: v for k, v in ctx.payload.tensors.items() if not k.startswith(CV)}
        factors = {**init, **received}  # the server's factors replace the QR init once they exist
        residual = self._offset(init, ctx.lora.scale(ctx.client.rank))
        return LocalSetup(factors=factors, residual=residual), cstate

    def grad_transform(
        self, grads: TensorDict, params: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> TensorDict:
        if not self.control_variates:
            return grads
        c_hat, c_k = strip_prefix(ctx.payload.tensors, CV), strip_prefix(cstate, CV)
        out = dict(grads)
        for k, g in grads.items():
            if k in c_hat:
                out[k] = g + c_hat[k] - c_k.get(k, torch.zeros_like(g))
        return out

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        weight = float(ctx.client.num_examples)
        if not self.control_variates:
            return Upload(dict(trained), weight), cstate
        if ctx.start_grad is None:
            raise RuntimeError("ILoRA-S needs ctx.start_grad; the training loop did not compute it")
        c_k = strip_prefix(cstate, CV)
        delta = {k: g - c_k.get(k, torch.zeros_like(g)) for k, g in ctx.start_grad.items()}
        return Upload({**trained, **with_prefix(delta, CV)}, weight), with_prefix(
            dict(ctx.start_grad), CV
        )

    # ---- math
    def _qr_factors(self, base: Mapping[str, torch.Tensor], r: int) -> TensorDict:
        """Return the QR init of every layer at rank ``r`` (memoized on the weights' bytes)."""
        out: TensorDict = {}
        rms = self.init_rms or None
        for m in keys.modules(base):
            W0 = base[keys.make(m, "base")]
            B, A = _QR_MEMO.get(W0, (r, rms), partial(qr_init, W0, r, rms))
            out[keys.make(m, "lora_B")], out[keys.make(m, "lora_A")] = B, A
        return out

    def _offset(self, init: Mapping[str, torch.Tensor], s: float) -> TensorDict:
        o = s if self.init_offset == "alpha_over_r" else 1.0
        return {
            keys.make(m, "residual"): -o
            * (init[keys.make(m, "lora_B")] @ init[keys.make(m, "lora_A")])
            for m in keys.modules(init)
        }  # (d_out, r) @ (r, d_in)

    @staticmethod
    def _terms(
        lora: LoRASpec, uploads: Mapping[int, Upload], p: Mapping[int, float], m: str, fold: bool
    ) -> Terms:
        """Return the clients' ``(B_k, A_k, c_k)`` of layer ``m``: ``Σ_k c_k B_k A_k``."""
        cids = sorted(uploads)
        Bs = [uploads[c].tensors[keys.make(m, "lora_B")] for c in cids]
        As = [uploads[c].tensors[keys.make(m, "lora_A")] for c in cids]
        coeffs = [
            p[c] * (lora.scale(a.shape[0]) if fold else 1.0) for c, a in zip(cids, As, strict=True)
        ]
        return Bs, As, coeffs

    def _refactor(
        self, terms: Terms, r: int, rnd: RoundInfo, m: str
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float] | None]:
        """Return rank-``r`` factors of ``Σ_k c_k B_k A_k`` and, if exact, the error terms.

        When the factors are the best rank-``r`` ones of the exact aggregate, the last item is
        ``(Σ_{i>r} σ_i², Σ_i σ_i²)``; otherwise ``None`` and the caller measures the error.
        """
        if self.redistribute == "qr_literal":
            B_c, A_c = stack(*terms)  # (d_out, Σr), (Σr, d_in)
            Q, R = qr_of_dense(B_c, A_c)  # Q: (d_out, q), R: (q, d_in), q = min(d_out, d_in) >= r
            return Q[:, :r].float().contiguous(), R[:r].float().contiguous(), None
        # (d_out, q), (q, d_in) = S Vᵀ, (n,) = S², q = min(r, n): the stacked A is never formed
        U, M, sq = principal_factors_of_sum(*terms, rank=r)
        q = M.shape[0]
        B = _complete_orthonormal(U, r, generator(rnd.seed, "ilora-complete", rnd.round, m))
        A = torch.cat([M, M.new_zeros(r - q, M.shape[1])])  # (r, d_in)
        tail = (float(sq[q:].sum()), float(sq.sum())) if self.fold_scaling else None
        return B.float().contiguous(), A.float().contiguous(), tail

    def _update_control(self, state: ILoRAState, uploads: Mapping[int, Upload]) -> TensorDict:
        if not self.control_variates:
            return state.control
        new = {k: v.clone() for k, v in state.control.items()}
        for cid in sorted(uploads):
            for k, d in strip_prefix(uploads[cid].tensors, CV).items():
                new[k] += resize_rank(d, state.rank, keys.kind_of(k)) / state.num_clients
        return new


def _complete_orthonormal(U: torch.Tensor, r: int, g: torch.Generator) -> torch.Tensor:
    """Extend orthonormal columns ``U (d, q)`` to ``(d, r)`` with seeded orthonormal directions.

    The extra columns pair with zero rows of A, so the product is unchanged while the client's
    extra rank stays trainable (a zero B column *and* a zero A row would never train).
    """
    if U.shape[1] >= r:
        return U
    extra = torch.randn(U.shape[0], r - U.shape[1], generator=g, dtype=U.dtype)  # (d, r - q)
    extra = extra - U @ (U.T @ extra)  # remove the span of U
    Q, _ = torch.linalg.qr(extra)  # (d, r - q)
    return torch.cat([U, Q], dim=1)  # (d, r)
