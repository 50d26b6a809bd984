"""CE-LoRA's similarity arithmetic: class statistics, data and model similarity, weighted cores.

Pure functions over tensors used by ``ce_lora.py`` (its module docstring has the method).
Shapes: ``K`` participants, ``K_cls`` classes, features of dimension ``d``, cores ``(r, r)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ilora.types import Features
from ilora.types import TensorDict

if TYPE_CHECKING:
    import torch


def mix_heads(heads: Sequence[TensorDict], w: torch.Tensor) -> TensorDict:
    """Return ``Σ_j w_j head_j`` (float64 accumulation, float32 result)."""
    import torch

    out: TensorDict = {}
    for k in heads[0] if heads else {}:
        acc = torch.zeros(heads[0][k].shape, dtype=torch.float64)
        for wj, h in zip(w.tolist(), heads, strict=True):
            acc += wj * h[k].double()
        out[k] = acc.float()
    return out


def block_mean(
    cores: Sequence[torch.Tensor | None], w: torch.Tensor, fallback: torch.Tensor
) -> torch.Tensor:
    """Return the entry-wise ``w``-weighted mean of the cores' leading blocks, fallback's size.

    Entry ``(a, b)`` averages the cores larger than ``max(a, b)`` with their weights
    renormalised; an entry no core with positive weight covers keeps ``fallback``'s value.
    ``None`` entries (a client without this layer) are skipped.
    """
    import torch

    R = fallback.shape[0]
    num = torch.zeros(R, R, dtype=torch.float64)  # (R, R)
    den = torch.zeros(R, R, dtype=torch.float64)  # (R, R)
    for C, wj in zip(cores, w.tolist(), strict=True):
        if C is None or wj <= 0:
            continue
        r = min(R, C.shape[0])
        num[:r, :r] += wj * C[:r, :r].double()
        den[:r, :r] += wj
    mean = num / den.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(den > 0, mean, fallback.double()).float()


def model_similarity(vectors: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """Return the cosine matrix ``(K, K)`` of per-layer cores, flattened and concatenated.

    Each pair compares the leading ``min(r_i, r_j)`` block of every layer; the diagonal is 1 and
    a pair with a zero vector gets 0.
    """
    import torch

    K = len(vectors)
    sim = torch.eye(K, dtype=torch.float64)
    for i in range(K):
        for j in range(i + 1, K):
            a, b = [], []
            for k in sorted(set(vectors[i]) & set(vectors[j])):
                r = min(vectors[i][k].shape[0], vectors[j][k].shape[0])
                a.append(vectors[i][k][:r, :r].double().flatten())
                b.append(vectors[j][k][:r, :r].double().flatten())
            u, v = torch.cat(a), torch.cat(b)
            norm = float(u.norm() * v.norm())
            sim[i, j] = sim[j, i] = float(u @ v) / norm if norm > 0 else 0.0
    return sim


def class_statistics(features: Features) -> TensorDict:
    """Return ``count (K_cls,)``, ``mean (K_cls, d)`` and population ``var (K_cls, d)`` per class.

    Classes without examples have count, mean and variance 0. Float64 sums, float32 results.
    """
    import torch

    x = features.inputs.double()  # (N, d)
    y = features.labels.long()  # (N,)
    K = features.num_classes
    count = torch.bincount(y, minlength=K).double()  # (K,)
    safe = count.clamp_min(1.0)[:, None]  # (K, 1)
    mean = torch.zeros(K, x.shape[1], dtype=torch.float64).index_add_(0, y, x) / safe  # (K, d)
    sq = (x - mean[y]).square()  # (N, d)
    var = torch.zeros(K, x.shape[1], dtype=torch.float64).index_add_(0, y, sq) / safe  # (K, d)
    return {"count": count.float(), "mean": mean.float(), "var": var.float()}


def class_divergence(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> tuple[float, float]:
    """Return ``(o, F)``: class overlap and mean squared 2-Wasserstein distance of the classes.

    ``o = Σ_c min(π_ac, π_bc)`` over the classes both hold, ``F`` the ``min(π_ac, π_bc)``-weighted
    mean of their ``W_c`` (``(0, 0)`` without a shared class).
    """
    import torch

    na, nb = a["count"].double(), b["count"].double()  # (K,)
    pi_a, pi_b = na / na.sum().clamp_min(1.0), nb / nb.sum().clamp_min(1.0)
    m = torch.minimum(pi_a, pi_b) * ((na > 0) & (nb > 0))  # (K,)
    o = float(m.sum())
    if o <= 0:
        return 0.0, 0.0
    w2 = (a["mean"].double() - b["mean"].double()).square().sum(1) + (
        a["var"].double().clamp_min(0).sqrt() - b["var"].double().clamp_min(0).sqrt()
    ).square().sum(1)  # (K,)
    return o, float((m * w2).sum()) / o


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Return the Euclidean projection of ``v (K,)`` onto ``{w ≥ 0, Σ w = 1}`` (sort-based)."""
    import torch

    u = torch.sort(v, descending=True).values  # (K,)
    css = torch.cumsum(u, 0) - 1.0  # (K,)
    idx = torch.arange(1, v.numel() + 1, dtype=v.dtype)
    rho = int((u - css / idx > 0).nonzero().max())
    theta = css[rho] / (rho + 1)
    return (v - theta).clamp_min(0.0)


def median_positive(values: torch.Tensor) -> float:
    """Return the lower median of the positive ``values`` (1 when there is none)."""
    import torch

    pos = torch.sort(values[values > 0]).values
    return float(pos[(pos.numel() - 1) // 2]) if pos.numel() else 1.0
