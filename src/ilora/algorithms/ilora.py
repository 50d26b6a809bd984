"""ILoRA: QR init, concatenated-QR aggregation, rank-aware control variates.

Zhou, Liu, Shang, arXiv 2511.16069.

1. **QR-based orthonormal init** (``init: qr``, default): ``Q, R = QR(W0)``, ``B = Q[:, :r]``,
   ``A = R[:r]``, optionally rescaled so that ``‖BA‖_F = init_rms·sqrt(d_out d_in)`` (the released
   code: 1e-4); the frozen base is offset by ``−o·BA`` (a residual), ``o = s(r) = α/r`` (default:
   the initial model is exactly ``W0``) or ``o = 1`` (``init_offset: one``, the released code).
   ``init: lora`` (an ablation of the init alone): standard LoRA's (Hu et al.) at ``r_max``,
   ``B = 0`` and ``A (r_max, d_in)`` drawn as FedIT's (``_shared.init_factors``, ``lora.init``:
   PEFT's kaiming-uniform, bound ``1/sqrt(d_in)``); ``BA = 0``, so the offset vanishes and the
   initial model is ``W0``; ``init_rms`` and ``init_offset`` do not apply; all that follows is
   ILoRA's. ``A`` comes from the run seed, which the server (``server_init``) and every client
   (``ctx.rnd.seed``) know: both draw it bitwise alike, so the download carries no init (the
   bytes are the QR init's, ``floats_per_round``) and the default path is untouched.
2. **Concatenated aggregation**: ``B_c = [B_1 … B_K]`` ``(d_out, Σr)``, ``A_c = [p_1 s_1 A_1; …]``
   ``(Σr, d_in)``, so ``B_c A_c = ΔW = Σ p_k s_k B_k A_k`` exactly; the adapter is cumulative
   (clients continue from the redistributed factors). Redistribution at ``r_max``:

   * ``redistribute: qr`` (default, the paper): the leading ``r_max`` columns of ``QR(ΔW)``
     without forming ``ΔW``: ``Q = orth(B_c·A_c[:, :r])``, ``R = (Qᵀ B_c) A_c``, the projection
     of ``ΔW`` onto the span of its first ``r`` columns (``lora.linalg.leading_qr_of_sum``, which
     also states what happens when those columns are rank-deficient);
   * ``redistribute: svd`` (this project's improvement): the best rank-``r`` factors
     (Eckart–Young) in factor space, as FlexLoRA's, exact whenever ``r ≥ rank(ΔW)``;
   * ``redistribute: qr_literal``: the released code, dense ``QR(ΔW)``, leading columns.

   Each client gets the leading ``r_j`` components (nested), ``A`` divided by ``s_j`` so that it
   applies the global product; ``fold_scaling: false`` reproduces the released code's raw
   ``B_k A_k`` (no ``s_k``, no ``÷ s_j``). ``split: qr`` (the paper) sends ``B = Q`` (orthonormal)
   and ``A = R``; ``split: balanced`` sends ``B = U√S``, ``A = √S Vᵀ`` of the same rank-``r_j``
   product (``lora.linalg.balanced_split``): the magnitude no longer sits in A alone, which
   changes how AdamW's per-entry steps move the layer (an ablation). The head is FedAvg-ed.
3. **Rank-aware control variates** (``control_variates``, registered as ``ilora-s``): SCAFFOLD
   option I inside AdamW/SGD. Server control ``c`` at ``r_max`` shapes, client control ``c_k`` at
   ``r_k``; the client receives ``ĉ = trunc_{r_k}(c)``, corrects every gradient ``g ← g + ĉ − c_k``
   before the optimizer step, sets ``c_k⁺ = ∇F_k(x)`` (the mean local gradient at the received
   point, correctly scaled: a mean over examples, not the released code's ÷ batch size) and uploads
   ``Δc_k = c_k⁺ − c_k``; the server zero-pads and sets ``c ← c + (1/N) Σ pad(Δc_k)``.
   The released code gives every trainable tensor a control (LoRA ``A``, ``B`` and the head);
   ``control_scope`` (an ablation of ours, ``_ilora_control``) restricts them to the adapters or
   to the head: the other tensors get no correction and no control travels for them.

Mixed ranks, exactly (``offset: shared``, default; our design). The paper offsets each client's
base by its own rank's init, and the server aggregates the cumulative factors, inits included:
with mixed ranks ``Σ_k p_k s_k B0_k A0_k ≠ s_max B0 A0`` and the difference stays in the model
(an untrained round moves it away from ``W0``). Here one offset ``O = o·B0 A0`` of the
rank-``r_max`` init is shared by the global model and every client, the global adapter starts
as that init (``W0 − O + s_max B0 A0 = W0``), a client of rank ``r_k`` starts from the leading
``r_k`` components of the global adapter at the global scale (round 1: it rebuilds the
rank-``r_max`` init itself from ``W0``, or the run seed; the download carries ``r_max`` as
``ilora/rank`` in its config), and the server adds each client's change relative to its start:
``P' = P + Σ_k p_k (s_k B_k A_k − P_{r_k})``, ``P_{r_k}`` the leading ``r_k`` components of
``P = B_g A_g``. In factor space that is one more block in the concatenation,
``[B_g; diag(w) A_g]`` with ``w_i = 1 − Σ_{k: r_k > i} p_k`` (the share of the round's weight
whose clients could not hold component ``i``), so an untrained round returns the global model
unchanged and, with equal ranks (``w = 0``), it is the paper's aggregation. The cost of the
cut: a low-rank client lacks the global adapter's trailing components, the init's included;
negligible with ``init_rms`` 1e-4 (9e-5 of ``‖W0‖`` for rank 2 of 16 on a 64x48 layer), large
with the raw QR (``init_rms: 0``: the init is a rank-``r_max`` part of ``W0``, 68% there). ``offset:
per_client`` is the paper's and released code's: each client offsets by its own rank's init
(rebuilt every round, never updated) and the server aggregates the uploads alone.

ILoRA-S is our reading of the paper's second row: ILoRA plus the control variates (the released
code's only switch on top of QR init and concatenated aggregation is ``--use_control``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Literal

from ilora.algorithms import traffic
from ilora.algorithms._ilora_control import CV
from ilora.algorithms._ilora_control import control_update
from ilora.algorithms._ilora_control import corrected
from ilora.algorithms._ilora_control import initial_control
from ilora.algorithms._ilora_control import updated_control
from ilora.algorithms._ilora_factors import CHOICES
from ilora.algorithms._ilora_factors import base_offset
from ilora.algorithms._ilora_factors import client_factors
from ilora.algorithms._ilora_factors import client_terms
from ilora.algorithms._ilora_factors import floats_per_round
from ilora.algorithms._ilora_factors import folded
from ilora.algorithms._ilora_factors import initial_factors
from ilora.algorithms._ilora_factors import robust_terms
from ilora.algorithms._redistribution import Terms
from ilora.algorithms._redistribution import redistribute
from ilora.algorithms._redistribution import unheld_components
from ilora.algorithms._robust_products import median_extras
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import mean_extras
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import check_at_least
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import error_terms
from ilora.lora.linalg import resize_rank
from ilora.lora.linalg import stack
from ilora.lora.spec import LoRASpec
from ilora.seeding import generator
from ilora.tensors import with_prefix
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

RANK_KEY = "ilora/rank"  # Payload.config: the global rank r_max (whose QR init is the offset)


@dataclass(frozen=True)
class ILoRAState:
    """ILoRA's server state.

    Global factors at ``rank`` (``A`` with ``s(rank)`` folded in; empty before the first
    aggregation, when the global adapter is the init), head, control ``cv`` (empty without
    control variates), the init factors at ``rank`` that offset the global model's base, and
    the last aggregation's metrics.
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
    """ILoRA and ILoRA-S (see the module docstring; bytes: ``_ilora_factors.floats_per_round``)."""

    heterogeneous_ranks = True
    multiplies_uploads = True  # B_c A_c = Σ p_k s_k B_k A_k
    stateful_clients = True

    control_variates: bool = hyperparameter(
        False, "paper", "rank-aware SCAFFOLD control variates (ILoRA-S)"
    )
    redistribute: Literal["qr", "svd", "qr_literal"] = hyperparameter(
        "qr",
        "paper",
        "qr: the paper's leading-column QR, in factor space; svd: best rank-r "
        "factors (ours); qr_literal: the released code's dense QR",
    )
    split: Literal["qr", "balanced"] = hyperparameter(
        "qr", "paper", "qr: B = Q orthonormal, A = R (paper); balanced: B = U√S, A = √S Vᵀ"
    )
    offset: Literal["shared", "per_client"] = hyperparameter(
        "shared",
        "ours",
        "shared (ours): one rank-r_max QR-init offset and each client's change "
        "relative to its start, so mixed ranks aggregate exactly and an untrained round "
        "keeps the model (equal ranks: the paper's); per_client: each client's own (paper)",
    )
    fold_scaling: bool = hyperparameter(
        True,
        "ours",
        "aggregate s_k B_k A_k and send A/s_j (ours: the paper is silent and the "
        "released code's raw B_k A_k, false, amplifies low ranks by α/r_k)",
    )
    init: Literal["qr", "lora"] = hyperparameter(
        "qr",
        "paper",
        "qr: the paper's QR init of W0; lora (ablation): standard LoRA's at r_max, B = 0 and "
        "A as FedIT's (lora.init; PEFT's kaiming-uniform) from the run seed; the rest ILoRA's",
    )
    init_rms: float = hyperparameter(
        1e-4, "code", "RMS of the initial BA (released code); 0 = raw Q, R"
    )
    init_offset: Literal["alpha_over_r", "one"] = hyperparameter(
        "alpha_over_r",
        "paper",
        "base offset of the QR init: alpha_over_r keeps W0 exactly, as the paper "
        "states; one = released code",
    )
    control_scope: Literal["all", "adapters", "head"] = hyperparameter(
        "all",
        "code",
        "ablation (ours) of control_variates: all = the released code (LoRA A, B and the head); "
        "adapters = the LoRA factors only; head = the classifier head only",
    )
    cv_batches: int = hyperparameter(0, "code", "batches for c_k+ (0 = one pass: code's option I)")
    robust_products: Literal["none", "median"] = hyperparameter(
        "none",
        "paper",
        "ours: median aggregates the coordinate-wise median of the clients' dense "
        "products s_k B_k A_k (and heads), then the best rank-r factors (Byzantine-robust, "
        "3+ uploads); none = the paper's weighted concatenation",
    )

    def __post_init__(self) -> None:
        check_at_least(self, init_rms=0, cv_batches=0)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.control_scope != "all" and not self.control_variates:
            raise ValueError("control_scope applies to ILoRA-S only: set control_variates: true")

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> ILoRAState:
        r = max_rank(clients)
        base = keys.of_kind(template, "base")
        init = initial_factors(self.init, base, r, lora, self.init_rms, seed)
        head = {k: v.clone() for k, v in keys.of_kind(template, "param").items()}
        control = {**init, **head} if self.control_variates else {}
        control = initial_control(control, self.control_scope)
        return ILoRAState({}, head, control, init, lora, r, len(clients))

    def download(self, state: ILoRAState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        out = client_factors(state.factors, client.rank, state.lora, self.fold_scaling, self.split)
        control = {
            k: resize_rank(v, client.rank, keys.kind_of(k)) for k, v in state.control.items()
        }
        tensors = {**out, **state.head, **with_prefix(control, CV)}
        return Payload(tensors, {RANK_KEY: state.rank})

    def aggregate(
        self, state: ILoRAState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> ILoRAState:
        p = normalized_weights(uploads)
        factors: TensorDict = {}
        err_sq = norm_sq = 0.0
        robust = self.robust_products == "median" and len(uploads) >= 3
        for m in keys.modules(state.init):
            terms = self._terms(state, uploads, p, m, fold=self.fold_scaling)
            if robust:
                terms = robust_terms(terms, p, uploads)
            g = generator(rnd.seed, "ilora-complete", rnd.round, m)
            B, A, tail = redistribute(terms, state.rank, self.redistribute, g)
            tail = tail if self.fold_scaling and not robust else None
            factors[keys.make(m, "lora_B")], factors[keys.make(m, "lora_A")] = B, A
            if tail is not None:  # Eckart–Young: the error of the best rank-r factors is the tail
                err_sq, norm_sq = err_sq + tail[0], norm_sq + tail[1]
            else:
                ideal = stack(*self._terms(state, uploads, p, m, fold=True))
                s_g = 1.0 if self.fold_scaling else state.lora.scale(state.rank)
                e, n = error_terms(ideal, (B, s_g * A))
                err_sq, norm_sq = err_sq + e, norm_sq + n
        control = (
            updated_control(state.control, uploads, state.rank, state.num_clients)
            if self.control_variates
            else state.control
        )
        metrics = {"agg_error": math.sqrt(err_sq / norm_sq) if norm_sq > 0 else 0.0}
        head = median_extras(uploads) if robust else mean_extras(uploads)
        return replace(state, factors=factors, head=head, control=control, metrics=metrics)

    def export(self, state: ILoRAState) -> LocalSetup:
        glob = self._global(state)
        if not glob:  # per_client offsets before the first aggregation: W0 and the head
            return LocalSetup(factors=dict(state.head))
        factors = client_factors(glob, state.rank, state.lora, self.fold_scaling, self.split)
        residual = base_offset(state.init, state.lora.scale(state.rank), self.init_offset)
        return LocalSetup(factors={**factors, **state.head}, residual=residual)

    def start_gradient_batches(self) -> int | None:
        return self.cv_batches if self.control_variates else None

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        base, r = keys.of_kind(ctx.base, "base"), ctx.client.rank
        received = {k: v for k, v in ctx.payload.tensors.items() if not k.startswith(CV)}
        if self.offset == "per_client":
            init = initial_factors(self.init, base, r, ctx.lora, self.init_rms, ctx.rnd.seed)
            residual = base_offset(init, ctx.lora.scale(r), self.init_offset)
            return LocalSetup(factors={**init, **received}, residual=residual), cstate
        r_max = int(ctx.payload.config.get(RANK_KEY, 0))
        if r_max < r:
            raise ValueError(f"ILoRA's download must carry the global rank >= {r} as {RANK_KEY!r}")
        init = initial_factors(self.init, base, r_max, ctx.lora, self.init_rms, ctx.rnd.seed)
        start = {}
        if not keys.of_kind(received, "lora_A"):  # round 1: the leading part of the global init
            start = client_factors(
                folded(init, ctx.lora, r_max, self.fold_scaling),
                r,
                ctx.lora,
                self.fold_scaling,
                self.split,
            )
        residual = base_offset(init, ctx.lora.scale(r_max), self.init_offset)
        return LocalSetup(factors={**start, **received}, residual=residual), cstate

    def grad_transform(
        self, grads: TensorDict, params: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> TensorDict:
        return corrected(grads, ctx.payload.tensors, cstate) if self.control_variates else grads

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        weight = float(ctx.client.num_examples)
        if not self.control_variates:
            return Upload(dict(trained), weight), cstate
        if ctx.start_grad is None:
            raise RuntimeError("ILoRA-S needs ctx.start_grad; the training loop did not compute it")
        delta, new_cstate = control_update(ctx.start_grad, cstate, self.control_scope)
        return Upload({**trained, **delta}, weight), new_cstate

    # ---- math
    def _global(self, state: ILoRAState) -> TensorDict:
        """Return the global factors; before the first aggregation the init (shared offset)."""
        if state.factors or self.offset == "per_client":
            return state.factors
        return folded(state.init, state.lora, state.rank, self.fold_scaling)

    def _terms(
        self,
        state: ILoRAState,
        uploads: Mapping[int, Upload],
        p: Mapping[int, float],
        m: str,
        fold: bool,
    ) -> Terms:
        """Return the ``(B_k, A_k, c_k)`` of layer ``m`` whose ``Σ_k c_k B_k A_k`` is the update.

        The clients' uploads, and with the shared offset the global adapter's components that
        not every client held (``diag(w) A_g``, module docstring).
        """
        Bs, As, coeffs = client_terms(uploads, p, m, state.lora, fold)
        if self.offset == "shared":
            glob = self._global(state)
            ranks = {c: int(a.shape[0]) for c, a in zip(sorted(uploads), As, strict=True)}
            B_g, A_g = unheld_components(
                glob[keys.make(m, "lora_B")], glob[keys.make(m, "lora_A")], ranks, p
            )
            if B_g.shape[1]:  # none with equal ranks: the paper's aggregation
                unfolded = fold and not self.fold_scaling  # state in raw units, ideal folded
                Bs.append(B_g)
                As.append(A_g)
                coeffs.append(state.lora.scale(state.rank) if unfolded else 1.0)
        return Bs, As, coeffs


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(ILoRA)(floats_per_round)  # in _ilora_factors
