"""Math several algorithms reuse, as pure functions over ``TensorDict``s."""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import TYPE_CHECKING

from ilora.lora import keys
from ilora.lora.linalg import error_terms
from ilora.lora.linalg import resize_rank
from ilora.lora.linalg import stack
from ilora.lora.spec import LoRASpec
from ilora.seeding import generator
from ilora.tensors import weighted_mean
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FactorState:
    """Server state of methods that keep one set of global tensors (factors and head).

    ``rank`` is the rank of the global factors; ``lora`` is the run's spec (scalings);
    ``metrics`` holds the diagnostics of the last aggregation.
    """

    tensors: TensorDict
    lora: LoRASpec
    rank: int
    metrics: dict[str, float] = field(default_factory=dict)


def layer_shapes(template: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """Return ``{module: (d_out, d_in)}`` from the ``<module>.base`` entries of a template."""
    return {m: tuple(template[keys.make(m, "base")].shape) for m in keys.modules(template)}  # type: ignore[misc]


def head_of(d: Mapping[str, torch.Tensor]) -> TensorDict:
    """Return the head (ordinary parameter) entries of ``d``."""
    return dict(keys.of_kind(d, "param"))


def init_factors(
    template: Mapping[str, torch.Tensor], r: int, lora: LoRASpec, *seed: object
) -> TensorDict:
    """Return standard LoRA factors at rank ``r`` for every layer: ``A`` random, ``B = 0``.

    ``A`` is PEFT's ``kaiming_uniform_(a=sqrt(5))`` (bound ``1/sqrt(d_in)``) or ``N(0, 1/r²)``
    (``init: gaussian``), drawn from ``generator(*seed, module)`` so every caller gets the same A.
    """
    import torch

    out: TensorDict = {}
    for module, (d_out, d_in) in layer_shapes(template).items():
        A = init_a(lora.init, r, d_in, generator(*seed, module))  # (r, d_in)
        out[keys.make(module, "lora_A")] = A
        out[keys.make(module, "lora_B")] = torch.zeros(d_out, r)  # (d_out, r)
    return out


def init_a(init: str, r: int, fan_in: int, g: torch.Generator) -> torch.Tensor:
    """Return a LoRA ``A (r, fan_in)`` drawn from ``g``: ``N(0, 1/r²)`` (``gaussian``) or uniform.

    Uniform: PEFT's ``kaiming_uniform_(a=sqrt(5))``, bound ``1/sqrt(fan_in)``.
    """
    import torch

    if init == "gaussian":
        return torch.randn(r, fan_in, generator=g) / r
    return (torch.rand(r, fan_in, generator=g) * 2 - 1) / math.sqrt(fan_in)


def normalized_weights(uploads: Mapping[int, Upload]) -> dict[int, float]:
    """Return ``p_k = w_k / Σ w_j`` by client id."""
    total = sum(u.weight for u in uploads.values())
    if total <= 0:
        raise ValueError(f"aggregation weights must sum to a positive number, got {total}")
    return {cid: u.weight / total for cid, u in uploads.items()}


def mean_extras(uploads: Mapping[int, Upload]) -> TensorDict:
    """Return the weighted mean of the uploaded head tensors (FedAvg, same for all methods)."""
    heads = [head_of(u.tensors) for u in uploads.values()]
    if not heads or not heads[0]:
        return {}
    return weighted_mean(heads, [u.weight for u in uploads.values()])


def rank_of(tensors: Mapping[str, torch.Tensor], module: str) -> int:
    """Return the rank of the factors of ``module`` in ``tensors``."""
    return int(tensors[keys.make(module, "lora_A")].shape[0])


def ideal_stack(
    uploads: Mapping[int, Upload], lora: LoRASpec, module: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(B_c, A_c)`` with ``B_c A_c = Σ_k p_k s_k B_k A_k`` (the exact aggregate)."""
    p = normalized_weights(uploads)
    Bs, As, coeffs = [], [], []
    for cid in sorted(uploads):
        t = uploads[cid].tensors
        r = rank_of(t, module)
        Bs.append(t[keys.make(module, "lora_B")])
        As.append(t[keys.make(module, "lora_A")])
        coeffs.append(p[cid] * lora.scale(r))
    return stack(Bs, As, coeffs)


def agg_error(
    ideal: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    applied: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
) -> float:
    """Return the relative Frobenius error of ``applied`` vs ``ideal`` over all layers together.

    ``sqrt(Σ_l ‖I_l − P_l‖²) / sqrt(Σ_l ‖I_l‖²)`` where each ``I_l``/``P_l`` is a factor pair.
    """
    num = den = 0.0
    for module, pair in ideal.items():
        e, n = error_terms(pair, applied[module])
        num, den = num + e, den + n
    return math.sqrt(num / den) if den > 0 else 0.0


def dense_agg_error(
    ideal: Mapping[str, torch.Tensor], applied: Mapping[str, torch.Tensor]
) -> float:
    """Return ``agg_error`` when the change applied is a dense ``(d_out, d_in)`` per layer.

    For residual methods (FLoRA, FedEx-LoRA), which form the dense ideal ``Σ p_k s_k B_k A_k``
    anyway: ``sqrt(Σ_l ‖I_l − P_l‖²) / sqrt(Σ_l ‖I_l‖²)`` in float64, 0 when every ideal is 0.
    """
    import torch

    num = den = 0.0
    for module, dense in ideal.items():
        ref = dense.to(torch.float64)
        num += float((ref - applied[module].to(torch.float64)).square().sum())
        den += float(ref.square().sum())
    return math.sqrt(num / den) if den > 0 else 0.0


def max_rank(clients: Sequence[ClientInfo]) -> int:
    return max(c.rank for c in clients)


def global_factor_state(
    template: Mapping[str, torch.Tensor], clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
) -> FactorState:
    """Return one standard LoRA init at the largest client rank plus the initial head.

    The starting point of every method that keeps a single global pair of factors; the seed
    purpose ``lora-init`` is shared, so those methods all start from the same A.
    """
    r = max_rank(clients)
    head = {k: v.clone() for k, v in keys.of_kind(template, "param").items()}
    return FactorState({**init_factors(template, r, lora, seed, "lora-init"), **head}, lora, r)


def truncated(tensors: Mapping[str, torch.Tensor], r: int) -> TensorDict:
    """Return ``tensors`` with every A cut to its leading ``r`` rows and B to ``r`` columns."""
    return {k: resize_rank(v, r, keys.kind_of(k)) for k, v in tensors.items()}


RESCALE_HELP = (
    "mixed ranks (ours, the paper has no rule): send B times s(r_max)/s(r_k) and map uploads "
    "back, so a client starts from the global model cut to its rank (false: it applies s(r_k) "
    "to the cut factors as they are)"
)


def b_ratio(lora: LoRASpec, r_global: int, r: int) -> float:
    """Return ``s(r_global)/s(r)``: what makes a rank-``r`` pair apply the global scale."""
    return lora.scale(r_global) / lora.scale(r)


def b_to_client(
    tensors: Mapping[str, torch.Tensor], lora: LoRASpec, r_global: int, r: int
) -> TensorDict:
    """Return ``tensors`` (cut to rank ``r``) with every B times ``s(r_global)/s(r)``.

    A rank-``r`` client applies ``s(r)``, so it then starts from ``s(r_global)·B[:, :r] A[:r]``:
    the global model's leading ``r`` components at the global model's own scale (no hidden
    ``s(r)/s(r_global)`` rescaling of its start). Other entries are returned as they are.
    """
    ratio = b_ratio(lora, r_global, r)
    return {
        k: (ratio * v).contiguous() if keys.kind_of(k) == "lora_B" and ratio != 1.0 else v
        for k, v in tensors.items()
    }


def rank_download(
    out: TensorDict, lora: LoRASpec, r_global: int, r: int, rescale_b: bool
) -> Payload:
    """Return the download ``out`` (global tensors cut to rank ``r``), B rescaled when asked.

    With ``rescale_b`` every B is times ``s(r_global)/s(r)`` (:func:`b_to_client`); without
    it ``out`` goes as it is.
    """
    return Payload(b_to_client(out, lora, r_global, r) if rescale_b else out)


def b_to_global(tensors: Mapping[str, torch.Tensor], lora: LoRASpec, r_global: int) -> TensorDict:
    """Return an upload with every B of rank ``r_k`` (its shape) times ``s(r_k)/s(r_global)``.

    The inverse of :func:`b_to_client`: ``s(r_global)·B' A = s(r_k)·B A``, the product the client
    applied, so averaging at the global scale averages what the clients trained.
    """
    out = dict(tensors)
    for k, b in keys.of_kind(tensors, "lora_B").items():
        ratio = 1.0 / b_ratio(lora, r_global, int(b.shape[1]))
        out[k] = b if ratio == 1.0 else (ratio * b).contiguous()
    return out


def uploads_to_global(
    uploads: Mapping[int, Upload], lora: LoRASpec, r_global: int
) -> dict[int, Upload]:
    """Return every upload with its B mapped to the global scale (:func:`b_to_global`)."""
    return {
        c: replace(u, tensors=b_to_global(u.tensors, lora, r_global)) for c, u in uploads.items()
    }


def global_pair_error(state: FactorState, uploads: Mapping[int, Upload], new: TensorDict) -> float:
    """Return ``agg_error`` of a global pair ``new`` applied at ``s(state.rank)``."""
    s = state.lora.scale(state.rank)
    ideal = {m: ideal_stack(uploads, state.lora, m) for m in keys.modules(new)}
    applied = {m: (new[keys.make(m, "lora_B")], s * new[keys.make(m, "lora_A")]) for m in ideal}
    return agg_error(ideal, applied)


def zero_residuals(template: Mapping[str, torch.Tensor]) -> TensorDict:
    """Return a zero ``<module>.residual`` ``(d_out, d_in)`` for every adapted layer."""
    import torch

    return {
        keys.make(m, "residual"): torch.zeros(d_out, d_in)  # (d_out, d_in)
        for m, (d_out, d_in) in layer_shapes(template).items()
    }


def split_residual(tensors: Mapping[str, torch.Tensor]) -> LocalSetup:
    """Return a setup with the ``residual`` entries installed under the other tensors (trained)."""
    residual = keys.of_kind(tensors, "residual")
    return LocalSetup({k: v for k, v in tensors.items() if k not in residual}, residual)


def padded_mean(uploads: Mapping[int, Upload], r: int) -> TensorDict:
    """Return the weighted mean of the uploads with every A/B zero-padded (or cut) to rank ``r``.

    FedIT's rule for mixed ranks: ``Ā = Σ p_k pad(A_k)``, ``B̄ = Σ p_k pad(B_k)``, head FedAvg.
    """
    ups = [uploads[c] for c in sorted(uploads)]
    padded = [{k: resize_rank(v, r, keys.kind_of(k)) for k, v in u.tensors.items()} for u in ups]
    return weighted_mean(padded, [u.weight for u in ups])


def componentwise_mean(
    old: torch.Tensor, kind: str, parts: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """Return ``old`` (an A ``(R, d_in)`` or a B ``(d_out, R)``) with each component averaged.

    Component ``i`` (row ``i`` of A, column ``i`` of B) is the weighted mean of component ``i``
    of the ``parts`` of rank ``> i`` (weights renormalised over them); a component no part has
    keeps its old value. Float64 accumulation, float32 result.
    """
    import torch

    rows = old if kind == "lora_A" else old.T  # (R, d)
    num = torch.zeros(rows.shape, dtype=torch.float64)  # (R, d)
    den = torch.zeros(rows.shape[0], 1, dtype=torch.float64)  # (R, 1)
    for part, w in zip(parts, weights, strict=True):
        p = (part if kind == "lora_A" else part.T).to(torch.float64)  # (r_k, d)
        num[: p.shape[0]] += w * p
        den[: p.shape[0]] += w
    mean = num / den.clamp_min(torch.finfo(torch.float64).tiny)
    out = torch.where(den > 0, mean, rows.to(torch.float64)).float()
    return out if kind == "lora_A" else out.T.contiguous()
