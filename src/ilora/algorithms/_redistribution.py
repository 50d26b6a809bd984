"""ILoRA's server math: the terms of a round's update and their redistribution at ``r_max``.

Pure functions over factors; shapes ``B (d_out, r)``, ``A (r, d_in)``. See ``ilora.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Literal

from ilora.lora.linalg import leading_qr_of_sum
from ilora.lora.linalg import principal_factors_of_sum
from ilora.lora.linalg import qr_of_dense
from ilora.lora.linalg import stack

if TYPE_CHECKING:
    import torch

Terms = tuple[list["torch.Tensor"], list["torch.Tensor"], list[float]]  # B_k, A_k, c_k per client
Redistribution = Literal["qr", "svd", "qr_literal"]


def unheld_components(
    B_g: torch.Tensor, A_g: torch.Tensor, ranks: Mapping[int, int], p: Mapping[int, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(B_g[:, i], w_i A_g[i])`` over the components ``i`` with ``w_i > 0``.

    ``w_i = 1 − Σ_{k: r_k > i} p_k`` is the share of the round's weight whose clients (rank
    ``ranks[k]``, weight ``p[k]``) did not hold component ``i`` of the global adapter
    ``B_g A_g``: with every client's upload, ``Σ_k p_k s_k B_k A_k + B_g diag(w) A_g`` is the
    global adapter plus each client's change relative to its start (its leading ``r_k``
    components). Shapes ``(d_out, n)`` and ``(n, d_in)`` float64, ``n = 0`` with equal ranks.
    """
    import torch

    held = torch.zeros(B_g.shape[1], dtype=torch.float64)  # (r,) Σ_{k: r_k > i} p_k
    for cid, r in ranks.items():
        held[:r] += p[cid]
    w = 1.0 - held
    rows = w > 1e-12
    B = B_g[:, rows].to(torch.float64)  # (d_out, n)
    A = w[rows, None] * A_g[rows].to(torch.float64)  # (n, d_in)
    return B, A


def redistribute(
    terms: Terms, r: int, mode: Redistribution, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float] | None]:
    """Return rank-``r`` factors ``(B, A)`` (float32) of ``ΔW = Σ_k c_k B_k A_k`` and its tail.

    ``qr``: the leading-column QR in factor space (``leading_qr_of_sum``); ``qr_literal``: the
    dense ``QR(ΔW)``, leading columns; ``svd``: the best rank-``r`` factors, ``B`` orthonormal
    (completed with seeded directions from ``g`` when ``rank(ΔW) < r``) and ``A = S Vᵀ``. The
    last item is ``(Σ_{i>r} σ_i², Σ_i σ_i²)`` for ``svd`` (the Eckart–Young error), else ``None``.
    """
    import torch

    if mode == "qr":
        Q, R = leading_qr_of_sum(*stack(*terms), r, g)  # (d_out, r), (r, d_in)
        return Q.float(), R.float(), None
    if mode == "qr_literal":
        Q, R = qr_of_dense(*stack(*terms))  # (d_out, q), (q, d_in), q = min(d_out, d_in) >= r
        return Q[:, :r].float().contiguous(), R[:r].float().contiguous(), None
    # (d_out, q), (q, d_in) = S Vᵀ, (n,) = S², q = min(r, n): the stacked A is never formed
    U, M, sq = principal_factors_of_sum(*terms, rank=r)
    q = M.shape[0]
    B = complete_orthonormal(U, r, g)
    A = torch.cat([M, M.new_zeros(r - q, M.shape[1])])  # (r, d_in)
    tail = (float(sq[q:].sum()), float(sq.sum()))
    return B.float().contiguous(), A.float().contiguous(), tail


def complete_orthonormal(U: torch.Tensor, r: int, g: torch.Generator) -> torch.Tensor:
    """Extend orthonormal columns ``U (d, q)`` to ``(d, r)`` with seeded orthonormal directions.

    The extra columns pair with zero rows of A, so the product is unchanged while the client's
    extra rank stays trainable (a zero B column *and* a zero A row would never train).
    """
    import torch

    if U.shape[1] >= r:
        return U
    extra = torch.randn(U.shape[0], r - U.shape[1], generator=g, dtype=U.dtype)  # (d, r - q)
    extra = extra - U @ (U.T @ extra)  # remove the span of U
    Q, _ = torch.linalg.qr(extra)  # (d, r - q)
    return torch.cat([U, Q], dim=1)  # (d, r)
