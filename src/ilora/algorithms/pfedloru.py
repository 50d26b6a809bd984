"""pFedLoRU: FedLoRU's global low-rank branch plus a personal low-rank branch per client.

Park, Klabjan, "Communication-Efficient Federated Low-Rank Update Algorithm and its Connection
to Implicit Regularization", arXiv 2409.12371: the personalized variant (pFedLoRU) for
statistical heterogeneity. No code was released for it; the mechanics below are our reading of
the paper and its reviews (ALGORITHMS.md Part 2 §1.2, tagged [recon] there).

Client ``k``'s model per adapted layer ``W0 (d_out, d_in)``:
``W_k = W0 + R + R_k + s_g B A + s_l U_k L_k`` with the shared merged residual ``R``, the global
branch ``B (d_out, r_k)``, ``A (r_k, d_in)`` (shared, trained, uploaded), a personal branch
``U_k (d_out, r_p)``, ``L_k (r_p, d_in)`` that never leaves the client, its optional private
merged residual ``R_k``, and each branch's own scaling ``s_g = s(r_k)``, ``s_l = s(r_p)``. One
round: the client receives ``(B, A)``, ``R`` and the head; trains (``schedule``):

* ``alternating`` (default): first the personal branch with the global one frozen
  (``personal_fraction`` of the local steps), then the global branch with the personal one
  frozen, each phase with a fresh optimizer (``LocalSetup.steps``). The frozen branch is folded
  into the residual, ``R + R_k + s_g B A`` ``# (d_out, r) @ (r, d_in) -> (d_out, d_in)`` in the
  personal phase and ``R + R_k + s_l U_k L_k`` in the global one, and the trained branch is the
  layer's adapter at its own rank, so both forward and gradients are exactly those of two
  separate branches and the frozen one cannot move;
* ``joint``: both branches every step, as one adapter of rank ``r_k + r_p``:
  ``B' = [B U_k]`` ``(d_out, r_k + r_p)``, ``A' = [A; L_k]`` ``(r_k + r_p, d_in)`` and a frozen
  diagonal ``C = diag(s_g/s', …, s_l/s', …)`` with ``s' = s(r_k + r_p)``, so the layer's
  ``s' B' C A' = s_g B A + s_l U_k L_k`` and each factor's gradient is its branch's own (the
  scalings sit in ``C``, not in the factors: no compensation in the trained values).

It uploads only ``(B_k, A_k)`` and the head. The server is FedLoRU's: ``B ← Σ p_k B_k``,
``A ← Σ p_k A_k``, head FedAvg, and every ``tau`` rounds ``R ← R + s B A`` with the factors
restarted (A fresh, seeded as FedLoRU's restart, B = 0). With ``personal_tau > 0`` the client
likewise merges ``R_k ← R_k + s_l U_k L_k`` and restarts its personal branch every
``personal_tau`` of its own participations ([recon] "τ_p local rounds").

Hooks: ``server_init``/``download``/``aggregate``/``export`` as FedLoRU; ``client_init`` builds
the phase's setup from the payload, the client state (``personal/<key>``: ``U_k``, ``L_k``,
``R_k``, ``personal/count``) and, for the global phase, ``ctx.trained``; ``upload`` sends the
global branch and keeps the personal one. The method is personalized: its number is each
client's ``W_k`` on its own test share (``client_init`` at the start of a round builds it). The
exported global model is ``W0 + R + s(r_max) B A`` without personal branches.

Choices where the sources are silent or differ:

* Schedule: alternating, personal branch first, is the default ("multiple low-rank updates";
  §1.2 calls it the safer reading: each branch fits with the other fixed). With
  ``train.steps = 1`` there is no personal phase (the step trains the global branch).
* ``personal_rank`` 0 (default) gives each client a personal branch of its own rank ``r_k``.
  The personal branch starts as the standard init (A ~ Kaiming, B = 0), seeded per client
  (``generator(seed, "pfedloru-personal", cid, count, module)``), so it differs across clients.
* The head is shared (FedAvg, as every method here) and trains in both phases.
* Download: the dense ``R`` every round, as FedLoRU here (a client may have missed merges).
* ``joint`` shares one dropout mask between the branches (``lora.dropout``; default 0) and needs
  ``r_k + r_p <= min(d_in, d_out)``.
* ``agg_error`` is FedLoRU's (FedIT's pair error of the averaged global branch).

Heterogeneous ranks (our extension, as FedIT): global factors at ``r_max``, a client of rank
``r_k`` trains their leading ``r_k`` components at ``s(r_k)``; uploads are zero-padded back.
With ``rescale_b`` (default) the global branch's B is sent times ``s(r_max)/s(r_k)`` and mapped
back on upload, so the global branch starts at exactly the global model's leading components
(``rescale_b: false``: ``s(r_k)/s(r_max)`` times them). See FedIT.

Bytes per client per round (float32), per adapted layer ``(d_out, d_in)`` at the client's rank
``r``: download ``4·(r·(d_out + d_in) + d_out·d_in)`` (B, A and the dense residual), upload
``4·r·(d_out + d_in)``; plus ``4·n_head`` each way for the head. The personal branch is free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Literal

from ilora.algorithms import traffic
from ilora.algorithms._pair_servers import MergingServer
from ilora.algorithms._shared import head_of
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import rank_of
from ilora.algorithms._shared import split_residual
from ilora.algorithms._shared import zero_residuals
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.tensors import strip_prefix
from ilora.tensors import with_prefix
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

PERSONAL = "personal/"  # cstate: U_k, L_k (as lora_B, lora_A), R_k (residual), count (int64)


@register("pfedloru")
@dataclass(frozen=True)
class PFedLoRU(MergingServer):
    """pFedLoRU (see the module docstring; state: :class:`~._pair_servers.ResidualServer`'s)."""

    heterogeneous_ranks = True
    stateful_clients = True
    personalized = True

    tau: int = hyperparameter(
        5,
        "ours",
        "merge s·B·A of the global branch into the residual and restart it every "
        "tau rounds "
        "(FedLoRU's paper: 50 of 400; ours: 5, scaled to shorter runs); 0 = never",
    )
    schedule: Literal["alternating", "joint"] = hyperparameter(
        "alternating",
        "ours",
        "alternating: personal branch (global frozen), then global branch (personal "
        "frozen); joint: both every step (ours: the paper gives no schedule, alternating "
        "reads its 'multiple low-rank updates')",
    )
    personal_rank: int = hyperparameter(
        0,
        "ours",
        "rank r_p of the personal branch; 0 = the client's rank (ours: the paper gives no r_p)",
    )
    personal_fraction: float = hyperparameter(
        0.5,
        "ours",
        "share of the local steps for the personal phase (alternating); "
        "ours: the paper gives no split, so half",
    )
    personal_tau: int = hyperparameter(
        0,
        "ours",
        "merge the personal branch into a private residual and restart it every "
        "personal_tau participations of the client; 0 = never "
        "(ours: the paper gives no τ_p, so the branch is never merged)",
    )

    def __post_init__(self) -> None:
        for name in ("tau", "personal_rank", "personal_tau"):
            if getattr(self, name) < 0:
                raise ValueError(f"pfedloru.{name} must be >= 0, got {getattr(self, name)}")
        if self.schedule not in ("alternating", "joint"):
            raise ValueError(
                f"pfedloru.schedule must be 'alternating' or 'joint', got {self.schedule!r}"
            )
        if not 0.0 < self.personal_fraction < 1.0:
            raise ValueError(
                f"pfedloru.personal_fraction must be in (0, 1), got {self.personal_fraction}"
            )

    # ---- client
    def personal_steps(self, steps: int) -> int:
        """Return the local steps of the personal phase (alternating): at least 1, leaving 1."""
        if steps < 2:
            return 0
        return min(steps - 1, max(1, round(self.personal_fraction * steps)))

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        shared = split_residual(ctx.payload.tensors)
        glob = keys.of_kind(shared.factors, "lora_A", "lora_B")  # (B, A) at r_k
        head = head_of(shared.factors)
        own = strip_prefix(cstate, PERSONAL)
        personal = keys.of_kind(own, "lora_A", "lora_B") or self._fresh(ctx, 0)
        base = _add(shared.residual, keys.of_kind(own, "residual"))  # R + R_k
        if self.schedule == "joint":
            return _joint_setup(glob, personal, head, base, ctx.lora), cstate
        phase = self.personal_steps(ctx.train.steps)
        if ctx.trained is None and phase > 0:
            residual = _fold(base, glob, ctx.lora)  # R + R_k + s_g B A: global frozen
            return LocalSetup({**personal, **head}, residual, steps=phase), cstate
        if ctx.trained is not None:  # the personal phase just ended
            personal = keys.of_kind(ctx.trained, "lora_A", "lora_B")
            head = head_of(ctx.trained)
            cstate = {**cstate, **with_prefix(personal, PERSONAL)}
        residual = _fold(base, personal, ctx.lora)  # R + R_k + s_l U L: personal frozen
        return LocalSetup({**glob, **head}, residual), cstate

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        own = strip_prefix(cstate, PERSONAL)
        personal = keys.of_kind(own, "lora_A", "lora_B") or self._fresh(ctx, 0)
        glob = keys.of_kind(trained, "lora_A", "lora_B")
        if self.schedule == "joint":
            glob, personal = _split_joint(glob, ctx.client.rank)
        own = {**own, **personal}
        if self.personal_tau:
            own = self._count_and_merge(own, ctx)
        up = Upload({**glob, **head_of(trained)}, float(ctx.client.num_examples))
        return up, with_prefix(own, PERSONAL)

    def _rank(self, client: ClientInfo) -> int:
        return self.personal_rank or client.rank

    def _fresh(self, ctx: ClientContext, count: int) -> TensorDict:
        """Return a standard init of the personal branch (A random, B = 0), seeded per client."""
        cid = ctx.client.cid
        r_p = self._rank(ctx.client)
        return init_factors(ctx.base, r_p, ctx.lora, ctx.rnd.seed, "pfedloru-personal", cid, count)

    def _count_and_merge(self, own: TensorDict, ctx: ClientContext) -> TensorDict:
        """Count the participation and merge the personal branch every ``personal_tau``-th.

        The merge is ``R_k ← R_k + s_l U L``, then a fresh ``L`` and ``U = 0``: the client's model
        is unchanged.
        """
        import torch

        count = int(own.get("count", torch.tensor(0))) + 1
        out = {**own, "count": torch.tensor(count, dtype=torch.int64)}
        if count % self.personal_tau:
            return out
        personal = keys.of_kind(own, "lora_A", "lora_B")
        residual = keys.of_kind(own, "residual") or zero_residuals(ctx.base)
        out.update(_fold(residual, personal, ctx.lora))
        out.update(self._fresh(ctx, count))
        return out


def _add(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> TensorDict:
    """Return ``a + b`` key by key over the keys of ``a`` (a missing ``b`` entry counts as 0)."""
    return {k: a[k] + b[k] if k in b else a[k] for k in a}


def _fold(
    residual: Mapping[str, torch.Tensor], factors: Mapping[str, torch.Tensor], lora: LoRASpec
) -> TensorDict:
    """Return ``residual + s(r) B A`` per layer (float64 sum, float32 result)."""
    import torch

    out: TensorDict = {}
    for m in keys.modules(residual):
        B = factors[keys.make(m, "lora_B")].to(torch.float64)  # (d_out, r)
        A = factors[keys.make(m, "lora_A")].to(torch.float64)  # (r, d_in)
        s = lora.scale(A.shape[0])
        R = residual[keys.make(m, "residual")].to(torch.float64)  # (d_out, d_in)
        out[keys.make(m, "residual")] = (R + s * (B @ A)).float()  # (d_out, r) @ (r, d_in)
    return out


def _joint_setup(
    glob: TensorDict, personal: TensorDict, head: TensorDict, residual: TensorDict, lora: LoRASpec
) -> LocalSetup:
    """Return one adapter ``B' = [B U]``, ``A' = [A; L]`` with a frozen scaling core ``C``.

    ``C = diag(s(r_g)/s(R), …, s(r_p)/s(R), …)`` ``(R, R)``, ``R = r_g + r_p``, so the layer's
    ``s(R) B' C A'`` is ``s(r_g) B A + s(r_p) U L`` exactly.
    """
    import torch

    factors: TensorDict = dict(head)
    for m in keys.modules(glob):
        r_g, r_p = rank_of(glob, m), rank_of(personal, m)
        s = lora.scale(r_g + r_p)
        scales = [lora.scale(r_g) / s] * r_g + [lora.scale(r_p) / s] * r_p
        factors[keys.make(m, "lora_A")] = torch.cat(
            [glob[keys.make(m, "lora_A")], personal[keys.make(m, "lora_A")]], dim=0
        )  # (r_g + r_p, d_in)
        factors[keys.make(m, "lora_B")] = torch.cat(
            [glob[keys.make(m, "lora_B")], personal[keys.make(m, "lora_B")]], dim=1
        )  # (d_out, r_g + r_p)
        factors[keys.make(m, "lora_C")] = torch.diag(torch.tensor(scales))  # (R, R)
    trainable = frozenset(k for k in factors if keys.kind_of(k) != "lora_C")
    return LocalSetup(factors, residual, trainable)


def _split_joint(joint: TensorDict, r_g: int) -> tuple[TensorDict, TensorDict]:
    """Return the global (leading ``r_g`` components) and personal parts of a joint adapter."""
    glob: TensorDict = {}
    personal: TensorDict = {}
    for k, v in joint.items():
        if keys.kind_of(k) == "lora_A":
            glob[k], personal[k] = v[:r_g].contiguous(), v[r_g:].contiguous()
        else:
            glob[k], personal[k] = v[:, :r_g].contiguous(), v[:, r_g:].contiguous()
    return glob, personal


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(PFedLoRU)(traffic.pair_and_residual_down)  # personal branch stays
