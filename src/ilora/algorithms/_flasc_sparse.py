"""FLASC's sparse encoding: flatten tensors into one vector, keep its top-k entries, decode.

A download or upload of ``flasc`` is ``{values (k,) float32, indices (k,) int32}`` of the
flattened tensors in ``layout_of`` order, or ``{dense (N,)}`` when ``2k ≥ N`` (see ``flasc``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ilora.types import TensorDict

if TYPE_CHECKING:
    import torch

VALUES, INDICES, DENSE = "flasc/values", "flasc/indices", "flasc/dense"
Layout = list[tuple[str, tuple[int, ...]]]


def layout_of(tensors: Mapping[str, torch.Tensor]) -> Layout:
    """Return ``[(key, shape), ...]`` in sorted key order: the flattening order."""
    return [(k, tuple(tensors[k].shape)) for k in sorted(tensors)]


def size_of(layout: Layout) -> int:
    import torch

    return sum(int(torch.Size(shape).numel()) for _, shape in layout)


def flatten(tensors: Mapping[str, torch.Tensor], layout: Layout) -> torch.Tensor:
    """Return the tensors of ``layout`` concatenated into one float32 vector ``(N,)``."""
    import torch

    return torch.cat([tensors[k].detach().reshape(-1).float() for k, _ in layout])


def unflatten(flat: torch.Tensor, layout: Layout) -> TensorDict:
    """Return ``flat (N,)`` cut back into the tensors of ``layout`` (contiguous copies)."""
    import torch

    out: TensorDict = {}
    offset = 0
    for k, shape in layout:
        n = int(torch.Size(shape).numel())
        out[k] = flat[offset : offset + n].reshape(shape).clone()
        offset += n
    return out


def kept(n: int, density: float) -> int:
    """Return ``max(1, ⌊density·n⌋)``: how many of ``n`` entries a top-k at ``density`` keeps."""
    return max(1, int(density * n))


def top_k_positions(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Return the ascending positions of the ``k`` largest ``|flat|`` (ties: lower position)."""
    import torch

    order = torch.sort(flat.abs(), descending=True, stable=True).indices  # (N,)
    return order[:k].sort().values  # (k,)


def encode(flat: torch.Tensor, density: float) -> TensorDict:
    """Return the top-``k`` entries of ``flat (N,)`` by magnitude, as sent.

    ``{values (k,) float32, indices (k,) int32}``, or ``{dense (N,)}`` (the masked vector) when
    ``2k ≥ N``, where the indices would cost more than the zeros.
    """
    import torch

    n = flat.numel()
    k = kept(n, density)
    pos = top_k_positions(flat, k)
    if 2 * k >= n:
        masked = torch.zeros(n)
        masked[pos] = flat[pos].float()
        return {DENSE: masked}
    return {VALUES: flat[pos].float().contiguous(), INDICES: pos.to(torch.int32).contiguous()}


def decode(tensors: Mapping[str, torch.Tensor], n: int) -> torch.Tensor:
    """Return the dense vector ``(n,)`` of an ``encode`` output (zeros where nothing was sent)."""
    import torch

    if DENSE in tensors:
        return tensors[DENSE].float().clone()
    flat = torch.zeros(n)
    flat[tensors[INDICES].long()] = tensors[VALUES].float()
    return flat
