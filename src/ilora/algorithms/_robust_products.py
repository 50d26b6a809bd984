"""ILoRA's robust aggregation (``robust_products: median``): ours, not the paper's.

A Byzantine client can upload any factors; ILoRA's aggregate ``Σ_k p_k s_k B_k A_k`` follows it
without bound, and coordinate-wise robust statistics of the factors themselves do not apply (the
median of the ``B_k`` times the median of the ``A_k`` is not the median of the products). These
work on the products, in the dense ``(d_out, d_in)`` space of one layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ilora.algorithms._shared import head_of
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

Terms = tuple[list["torch.Tensor"], list["torch.Tensor"], list[float]]  # B_k, A_k, c_k per client


def median_of_products(
    terms: Terms, p: Mapping[int, float], uploads: Mapping[int, Upload]
) -> Terms:
    """Return one term ``(M, I, 1)`` whose product is the median of the clients' products.

    ``terms`` holds ``(B_k, A_k, c_k)`` with ``c_k = p_k s_k``; the dense products
    ``s_k B_k A_k`` ``(d_out, d_in)`` are stacked and their coordinate-wise median ``M`` taken
    (the lower middle value for an even count), in float64. Ours (docs/SECURITY.md): it
    replaces ``Σ_k p_k s_k B_k A_k``, unweighted as robust aggregation of a mean is.
    """
    import torch

    Bs, As, coeffs = terms
    weights = [p[c] for c in sorted(uploads)]
    dense = torch.stack(
        [
            (c / w) * (B.double() @ A.double())
            for B, A, c, w in zip(Bs, As, coeffs, weights, strict=True)
        ]
    )  # (n, d_out, d_in)
    median = dense.median(dim=0).values
    eye = torch.eye(median.shape[1], dtype=torch.float64)
    return [median], [eye], [1.0]


def median_extras(uploads: Mapping[int, Upload]) -> TensorDict:
    """Return the coordinate-wise median of every head tensor over the uploads."""
    import torch

    heads = [head_of(uploads[c].tensors) for c in sorted(uploads)]
    return {k: torch.stack([h[k] for h in heads]).median(dim=0).values for k in heads[0]}
