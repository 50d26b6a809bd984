"""Pure operations on ``TensorDict``s (``dict[str, Tensor]``); none mutates its inputs."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ilora.types import TensorDict

if TYPE_CHECKING:
    import torch


def canonical(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> TensorDict:
    """Return detached, CPU, C-contiguous copies, keys sorted (what crosses every boundary).

    Args:
        tensors: any mapping of tensors.
        dtype: if given, floating tensors are cast to it.

    """
    out: TensorDict = {}
    for key in sorted(tensors):
        t = tensors[key].detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous().clone()
    return out


def weighted_mean(
    dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> TensorDict:
    """Return ``sum_i w_i d_i / sum_i w_i`` key by key (float64 accumulation, float32 result).

    Raises:
        ValueError: on an empty input, mismatched keys or shapes, or non-positive total weight.

    """
    import torch

    if not dicts or len(dicts) != len(weights):
        raise ValueError(
            f"weighted_mean needs matching dicts and weights, got {len(dicts)}/{len(weights)}"
        )
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {total}")
    keys = set(dicts[0])
    out: TensorDict = {}
    for key in sorted(keys):
        acc = torch.zeros(dicts[0][key].shape, dtype=torch.float64)
        for d, w in zip(dicts, weights, strict=True):
            if set(d) != keys or d[key].shape != dicts[0][key].shape:
                raise ValueError(f"weighted_mean: mismatched keys or shape at {key!r}")
            acc += (w / total) * d[key].to(torch.float64)
        out[key] = acc.to(
            dicts[0][key].dtype if dicts[0][key].is_floating_point() else torch.float32
        )
    return out


def map_values(
    fn: Callable[[torch.Tensor], torch.Tensor], d: Mapping[str, torch.Tensor]
) -> TensorDict:
    """Return ``{k: fn(v)}``."""
    return {k: fn(v) for k, v in d.items()}


def add(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], scale: float = 1.0
) -> TensorDict:
    """Return ``a + scale * b`` over the keys of ``a`` (``b`` must have them all)."""
    return {k: a[k] + scale * b[k] for k in a}


def sub(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> TensorDict:
    """Return ``a - b`` over the keys of ``a``."""
    return {k: a[k] - b[k] for k in a}


def scale(d: Mapping[str, torch.Tensor], factor: float) -> TensorDict:
    """Return ``factor * d``."""
    return {k: factor * v for k, v in d.items()}


def select(d: Mapping[str, torch.Tensor], keys: Iterable[str]) -> TensorDict:
    """Return the entries of ``d`` whose key is in ``keys`` (missing keys are skipped)."""
    wanted = set(keys)
    return {k: v for k, v in d.items() if k in wanted}


def with_prefix(d: Mapping[str, torch.Tensor], prefix: str) -> TensorDict:
    """Return ``{prefix + k: v}`` (namespacing, e.g. ``cv/``)."""
    return {prefix + k: v for k, v in d.items()}


def strip_prefix(d: Mapping[str, torch.Tensor], prefix: str) -> TensorDict:
    """Return the entries whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in d.items() if k.startswith(prefix)}


def num_bytes(d: Mapping[str, torch.Tensor]) -> int:
    """Return the payload size in bytes of the tensors (element size times count)."""
    return sum(t.numel() * t.element_size() for t in d.values())


def all_finite(d: Mapping[str, torch.Tensor]) -> bool:
    """Return True when every floating tensor is free of NaN and Inf."""
    import torch

    return all(bool(torch.isfinite(t).all()) for t in d.values() if t.is_floating_point())
