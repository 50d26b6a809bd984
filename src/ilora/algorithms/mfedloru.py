"""mFedLoRU: FedLoRU for heterogeneous clients, by nested low-rank updates of the global factors.

Park, Klabjan, "Communication-Efficient Federated Low-Rank Update Algorithm and its Connection
to Implicit Regularization", arXiv 2409.12371: the variant for model (resource) heterogeneity
(mFedLoRU). No code was released for it; the mechanics below are our reading of the paper and
its reviews (ALGORITHMS.md Part 2 §1.3, tagged [recon] there).

The global factors ``B (d_out, R)``, ``A (R, d_in)`` live at ``R`` = the largest client rank,
on top of the merged residual ``R_res (d_out, d_in)``. A client of rank ``r = R`` trains them
directly (FedLoRU). A client of rank ``r < R`` cannot afford that and trains a rank-``r`` update
*of the factors* instead, with ``B`` and ``A`` frozen:

* ``B_k = B + P^B Q^B``, ``P^B (d_out, r)``, ``Q^B (r, R)``
  ``# (d_out, r) @ (r, R) -> (d_out, R)``;
* ``A_k = A + P^A Q^A``, ``P^A (R, r)``, ``Q^A (r, d_in)`` ``# (R, r) @ (r, d_in) -> (R, d_in)``;
* model ``W0 + R_res + s(R) B_k A_k`` (every client applies the global rank's scaling), so it
  trains ``r·(d_out + d_in + 2R)`` floats per layer instead of ``R·(d_out + d_in)``.

The nested factors start at ``P^B = 0``, ``P^A = 0`` and ``Q^A``, ``Q^B`` random (LoRA's init
one level down: the client starts exactly at the global model), fresh every round. The client
uploads ``P^B, Q^B, P^A, Q^A`` and the head; the server, which holds the ``B, A`` it sent,
reconstructs ``(B_k, A_k)`` and averages: ``B ← Σ p_k B_k``, ``A ← Σ p_k A_k`` (all at rank
``R``, in the same coordinates: no padding, truncation or SVD), head FedAvg; every ``tau`` rounds
it merges ``R_res ← R_res + s(R) B A`` and restarts (A fresh, B = 0), as FedLoRU.

Hooks: ``server_init`` the standard init at ``R`` (seed purpose ``lora-init``), zero residuals,
head; ``download`` ``B, A`` (as ``outer_B``, ``outer_A`` for a nested client), ``R_res`` and the
head; ``client_init`` the nested setup (``LoRALinear``'s nested update: ``lora_B = P^B``,
``inner_B = Q^B``, ``inner_A = P^A``, ``lora_A = Q^A`` trainable, the outer pair frozen) or
FedLoRU's; default ``upload``; ``aggregate`` reconstructs, averages and merges; ``export`` as
FedLoRU.

Choices where the sources are silent or differ:

* Placement ``B + P Q`` on both factors and which nested factor starts at zero (the spec leaves
  them to verify); ``Q^A`` is drawn as LoRA's A (``lora.init``, fan-in ``d_in``) and ``Q^B``
  likewise with fan-in ``R``, from ``generator(seed, "mfedloru-nested", round, cid, ...)``.
* Upload: the nested factors, not the merged ``(B_k, A_k)``: the server holds the exact outer
  pair, and ``r·(d_out + d_in + 2R) < R·(d_out + d_in)`` whenever
  ``r < R (d_out + d_in) / (d_out + d_in + 2R)``, i.e. for every ``r < R`` on layers with
  ``R ≪ d_out + d_in``. The reconstruction is exact (float64 from the float32 values sent).
* The nested level is not itself re-merged across rounds: a client's nested factors live for
  one round, folded into ``(B, A)`` by the server's average; the periodic accumulation is
  FedLoRU's (``tau``, default 5, shared restart seed ``fedloru-restart``).
* Download: the dense ``R_res`` every round (stateless clients; see FedLoRU).
* ``agg_error``: the averaged pair at ``s(R)`` against ``Σ p_k s(R) B_k A_k`` (the FedAvg-of-
  factors inexactness); the merge is exact.

Heterogeneous ranks are the point of the method: nothing is truncated or padded; a client's
rank only sets the rank of its nested update.

Bytes per client per round (float32), per adapted layer ``(d_out, d_in)``, for a client of rank
``r`` and the global rank ``R``: download ``4·(R·(d_out + d_in) + d_out·d_in)`` (B, A and the
dense residual); upload ``4·r·(d_out + d_in + 2R)`` (``P^B, Q^B, P^A, Q^A``) when ``r < R``,
``4·R·(d_out + d_in)`` (B, A) when ``r = R``; plus ``4·n_head`` each way for the head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._merging import MERGE_HELP
from ilora.algorithms._merging import install_round
from ilora.algorithms._pair_servers import ResidualServer
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import agg_error
from ilora.algorithms._shared import head_of
from ilora.algorithms._shared import init_a
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms._shared import split_residual
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import stack
from ilora.seeding import generator
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

OUTER = {"lora_A": "outer_A", "lora_B": "outer_B"}  # the frozen global pair of a nested client


@register("mfedloru")
@dataclass(frozen=True)
class MFedLoRU(ResidualServer):
    """mFedLoRU (see the module docstring; state: :class:`~._pair_servers.ResidualServer`'s)."""

    heterogeneous_ranks = True
    multiplies_uploads = True  # reconstruct: A + P Q of the uploaded nested factors

    tau: int = hyperparameter(5, "ours", MERGE_HELP)

    def __post_init__(self) -> None:
        if self.tau < 0:
            raise ValueError(f"mfedloru.tau must be >= 0 (0 = never merge), got {self.tau}")

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        if client.rank >= state.rank:
            return Payload(dict(state.tensors))
        return Payload({_renamed(k, OUTER): v for k, v in state.tensors.items()})

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        full = {c: reconstruct(state.tensors, u.tensors) for c, u in uploads.items()}
        cids = sorted(uploads)
        mean = weighted_mean([full[c] for c in cids], [uploads[c].weight for c in cids])
        metrics = {"agg_error": _pair_error(state, full, uploads, mean)}
        return install_round(state, mean, metrics, rnd, self.tau)

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        shared = split_residual(ctx.payload.tensors)
        if not keys.of_kind(shared.factors, "outer_A"):  # a client at the global rank
            return shared, cstate
        nested = nested_init(ctx)
        factors = {**shared.factors, **nested}
        trainable = frozenset(head_of(factors)) | frozenset(nested)  # the outer pair is frozen
        return LocalSetup(factors, shared.residual, trainable), cstate


def nested_init(ctx: ClientContext) -> TensorDict:
    """Return the client's fresh nested factors at its rank ``r`` for outer rank ``R``.

    ``lora_B = P^B = 0`` ``(d_out, r)``, ``inner_A = P^A = 0`` ``(R, r)``; ``lora_A = Q^A``
    ``(r, d_in)`` as LoRA's A and ``inner_B = Q^B`` ``(r, R)`` the same rule with fan-in ``R``.
    """
    import torch

    rnd, cid, r = ctx.rnd, ctx.client.cid, ctx.client.rank
    seed = (rnd.seed, "mfedloru-nested", rnd.round, cid)
    out = init_factors(ctx.base, r, ctx.lora, *seed)  # Q^A random, P^B = 0
    for m in keys.modules(out):
        R = int(ctx.payload.tensors[keys.make(m, "outer_A")].shape[0])
        out[keys.make(m, "inner_B")] = init_a(ctx.lora.init, r, R, generator(*seed, "inner", m))
        out[keys.make(m, "inner_A")] = torch.zeros(R, r)  # (R, r)
    return out


def reconstruct(
    global_tensors: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]
) -> TensorDict:
    """Return an upload as full-rank factors and head: ``B + P^B Q^B``, ``A + P^A Q^A``.

    An upload without nested factors (a client at the global rank) is returned as it is.
    ``global_tensors`` holds the ``B, A`` the client received. Float64, then float32.
    """
    import torch

    if not keys.of_kind(tensors, "inner_A"):
        return dict(tensors)
    out = head_of(tensors)
    for m in keys.modules(tensors):
        B = global_tensors[keys.make(m, "lora_B")].to(torch.float64)  # (d_out, R)
        A = global_tensors[keys.make(m, "lora_A")].to(torch.float64)  # (R, d_in)
        P_B = tensors[keys.make(m, "lora_B")].to(torch.float64)  # (d_out, r)
        Q_B = tensors[keys.make(m, "inner_B")].to(torch.float64)  # (r, R)
        P_A = tensors[keys.make(m, "inner_A")].to(torch.float64)  # (R, r)
        Q_A = tensors[keys.make(m, "lora_A")].to(torch.float64)  # (r, d_in)
        out[keys.make(m, "lora_B")] = (B + P_B @ Q_B).float()  # (d_out, r) @ (r, R)
        out[keys.make(m, "lora_A")] = (A + P_A @ Q_A).float()  # (R, r) @ (r, d_in)
    return out


def _pair_error(
    state: FactorState,
    full: Mapping[int, TensorDict],
    uploads: Mapping[int, Upload],
    mean: TensorDict,
) -> float:
    """Return ``agg_error`` of ``s(R) B̄Ā`` against ``Σ p_k s(R) B_k A_k`` (all at rank R)."""
    p, s = normalized_weights(uploads), state.lora.scale(state.rank)
    cids = sorted(full)
    ideal, applied = {}, {}
    for m in keys.modules(keys.of_kind(mean, "lora_A")):
        Bs = [full[c][keys.make(m, "lora_B")] for c in cids]
        As = [full[c][keys.make(m, "lora_A")] for c in cids]
        ideal[m] = stack(Bs, As, [p[c] * s for c in cids])  # (d_out, KR), (KR, d_in)
        applied[m] = (mean[keys.make(m, "lora_B")], s * mean[keys.make(m, "lora_A")])
    return agg_error(ideal, applied)


def _renamed(key: str, names: Mapping[str, str]) -> str:
    """Return ``key`` with its layer kind renamed by ``names`` (other keys unchanged)."""
    parsed = keys.parse(key)
    if parsed is None or parsed[1] not in names:
        return key
    return keys.make(parsed[0], names[parsed[1]])


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
@traffic.formula(MFedLoRU)
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """Down: the global B, A at ``r_max``, the residual and the head.

    Up: the nested factors ``P^B, Q^B, P^A, Q^A`` (``r·(d_out + d_in + 2 r_max)`` per layer)
    and the head, or B, A at ``r_max`` when the client is at ``r_max``.
    """
    R = c.max_rank
    down = s.pair(R) + s.dense() + s.n_head
    if c.rank >= R:
        return down, s.pair(R) + s.n_head
    nested = sum(c.rank * (d_out + d_in + 2 * R) for d_out, d_in in s.layers)
    return down, nested + s.n_head
