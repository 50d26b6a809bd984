"""Low-rank linear algebra in factor space: products, stacking, QR/SVD refactorization, ranks.

Shapes follow PyTorch: ``B (d_out, r)``, ``A (r, d_in)``, product ``B A (d_out, d_in)``.
Nothing here forms a dense ``(d_out, d_in)`` matrix unless its name says ``dense``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def stack(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], coeffs: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``B_c = [B_1 … B_K]``, ``A_c = [c_1 A_1; …; c_K A_K]``: ``B_c A_c = Σ c_k B_k A_k``.

    The coefficient goes on A (FLoRA's convention); shapes ``(d_out, Σr)`` and ``(Σr, d_in)``.
    """
    import torch

    B_c = torch.cat([b.to(torch.float64) for b in Bs], dim=1)  # (d_out, Σr)
    A_c = torch.cat(
        [c * a.to(torch.float64) for a, c in zip(As, coeffs, strict=True)], dim=0
    )  # (Σr, d_in)
    return B_c, A_c


def fro_norm_sq(B: torch.Tensor, A: torch.Tensor) -> float:
    """Return ``‖B A‖_F²`` as ``⟨BᵀB, A Aᵀ⟩`` without forming ``B A``."""
    import torch

    B64, A64 = B.to(torch.float64), A.to(torch.float64)
    return float(((B64.T @ B64) * (A64 @ A64.T)).sum().clamp_min(0.0))  # (r, r) ⊙ (r, r)


def error_terms(
    ideal: tuple[torch.Tensor, torch.Tensor], applied: tuple[torch.Tensor, torch.Tensor]
) -> tuple[float, float]:
    """Return ``(‖B_i A_i − B_a A_a‖_F², ‖B_i A_i‖_F²)`` in factor space."""
    import torch

    B = torch.cat(
        [ideal[0].to(torch.float64), applied[0].to(torch.float64)], dim=1
    )  # (d_out, r_i+r_a)
    A = torch.cat(
        [ideal[1].to(torch.float64), -applied[1].to(torch.float64)], dim=0
    )  # (r_i+r_a, d_in)
    return fro_norm_sq(B, A), fro_norm_sq(*ideal)


def relative_error(
    ideal: tuple[torch.Tensor, torch.Tensor], applied: tuple[torch.Tensor, torch.Tensor]
) -> float:
    """Return ``‖B_i A_i − B_a A_a‖_F / ‖B_i A_i‖_F`` in factor space (0 when the ideal is 0)."""
    num, den = error_terms(ideal, applied)
    return (num / den) ** 0.5 if den > 0 else 0.0


def principal_factors(
    B: torch.Tensor, A: torch.Tensor, rank: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``U, M, σ²`` with ``B A = U M``, ``U`` orthonormal and ``M``'s rows of norm ``σ_i``.

    The rows are sorted by decreasing ``σ_i`` (the singular values of ``B A``), so ``U[:, :r]``
    and ``M[:r]`` are the best rank-``r`` factors (Eckart–Young): ``M = S Vᵀ`` of the SVD, with
    each column's sign fixed (its largest entry in the eigenbasis is positive). ``rank`` keeps
    only the leading components of ``U`` and ``M`` (``σ²`` always has all of them). See
    :func:`principal_factors_of_sum`, of which this is the one-term case.
    """
    return principal_factors_of_sum([B], [A], [1.0], rank)


def principal_factors_of_sum(
    Bs: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    coeffs: Sequence[float],
    rank: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return :func:`principal_factors` of ``Σ_k c_k B_k A_k`` without forming it or stacking A.

    ``Q, R = QR([B_1 … B_K])`` (float64), core ``C = R A_c = Σ_k c_k R_k A_k`` accumulated block
    by block (``R_k`` the columns of ``R`` of client ``k``, so the stacked ``A_c`` never exists),
    then the eigenvectors ``W`` of the small Gram matrix ``C Cᵀ``, ``U = Q W`` and ``M = Wᵀ C``
    cut to ``rank`` columns/rows. Cost ``O((d_out + d_in) R²)`` for ``R = Σ r_k``; memory beyond
    the inputs: the stacked B, ``Q`` and ``C`` (the stacked B is freed once ``Q`` exists).
    """
    import torch

    B_c = torch.cat([b.to(torch.float64) for b in Bs], dim=1)  # (d_out, Σr)
    Q, R = torch.linalg.qr(B_c)  # Q: (d_out, m), R: (m, Σr), m = min(d_out, Σr)
    del B_c
    core = R.new_zeros(R.shape[0], As[0].shape[1])  # (m, d_in)
    col = 0
    for A_k, c in zip(As, coeffs, strict=True):
        r_k = A_k.shape[0]
        # (m, r_k) @ (r_k, d_in) -> (m, d_in), accumulated in place
        core.addmm_(R[:, col : col + r_k], A_k.to(torch.float64), alpha=c)
        col += r_k
    evals, W = torch.linalg.eigh(core @ core.T)  # ascending; W: (m, m) orthonormal
    evals, W = evals.flip(0).clamp_min(0.0), W.flip(1)
    # eigenvector signs are arbitrary: fix them (largest entry positive) so the factors, and the
    # control variates measured in their coordinates, do not depend on the LAPACK build
    pivot = W.gather(0, W.abs().argmax(dim=0, keepdim=True))  # (1, m)
    W = W * torch.where(pivot < 0, -1.0, 1.0).to(W.dtype)
    W = W if rank is None else W[:, :rank]  # (m, k)
    return (Q @ W).contiguous(), (W.T @ core).contiguous(), evals  # (d_out, k), (k, d_in), (m,)


def svd_of_product(
    B: torch.Tensor, A: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the thin SVD ``U S Vh`` of ``B A`` in factor space (see ``principal_factors``).

    Rows of ``Vh`` whose singular value is zero are zero.
    """
    import torch

    U, M, sq = principal_factors(B, A)
    S = sq.sqrt()  # (m,)
    safe = torch.where(S > 0, S, torch.ones_like(S))
    return U, S, (M / safe[:, None]).contiguous()


def qr_of_dense(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the reduced QR of the dense product ``B A`` (ILoRA's released code path)."""
    import torch

    dense = B.to(torch.float64) @ A.to(torch.float64)  # (d_out, d_in): formed on purpose
    Q, R = torch.linalg.qr(dense)  # Q: (d_out, m), R: (m, d_in)
    return Q.contiguous(), R.contiguous()


def pad_rank(t: torch.Tensor, r: int, kind: str) -> torch.Tensor:
    """Zero-pad an A ``(r_k, d_in)`` (rows) or B ``(d_out, r_k)`` (columns) up to rank ``r``."""
    import torch

    if kind == "lora_A":
        return torch.cat([t, t.new_zeros(r - t.shape[0], t.shape[1])], dim=0)  # (r, d_in)
    return torch.cat([t, t.new_zeros(t.shape[0], r - t.shape[1])], dim=1)  # (d_out, r)


def truncate_rank(t: torch.Tensor, r: int, kind: str) -> torch.Tensor:
    """Keep the leading ``r`` rows of an A or columns of a B (a contiguous copy)."""
    return (t[:r] if kind == "lora_A" else t[:, :r]).contiguous()


def resize_rank(t: torch.Tensor, r: int, kind: str) -> torch.Tensor:
    """Pad or truncate an A/B factor to rank ``r``; other tensors are returned as they are."""
    if kind not in ("lora_A", "lora_B"):
        return t
    cur = t.shape[0] if kind == "lora_A" else t.shape[1]
    return pad_rank(t, r, kind) if cur < r else truncate_rank(t, r, kind)


def qr_init(
    W0: torch.Tensor, r: int, target_rms: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ILoRA's (OLoRA's) QR factors of ``W0 (d_out, d_in)`` at rank ``r``: ``(B, A)``.

    ``B = Q[:, :r]`` (orthonormal columns) and ``A = R[:r]``; with ``target_rms`` both are scaled
    by ``c = sqrt(τ / ‖B A‖_F)``, ``τ = target_rms · sqrt(d_out d_in)``, so ``‖B A‖_F = τ`` (the
    released code uses 1e-4). Nested across ranks: rank-2 factors are the leading part of rank-6.
    """
    import torch

    Q, R = torch.linalg.qr(W0.detach().to(torch.float64))  # Q: (d_out, m), R: (m, d_in)
    B, A = Q[:, :r], R[:r]  # (d_out, r), (r, d_in)
    if target_rms is not None:
        tau = target_rms * (W0.shape[0] * W0.shape[1]) ** 0.5
        norm = fro_norm_sq(B, A) ** 0.5
        c = (tau / norm) ** 0.5 if norm > 0 else 1.0
        B, A = c * B, c * A
    return B.float().contiguous(), A.float().contiguous()


def leading_qr_of_sum(
    B_c: torch.Tensor, A_c: torch.Tensor, rank: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``Q (d_out, rank)``, ``R (rank, d_in)``: the leading-column QR of ``B_c A_c``.

    ``Q[:, :r] R[:r]`` of the dense QR of ``ΔW = B_c A_c`` is the projection of ``ΔW`` onto the
    span of its first ``r`` columns, so ``Q = orth(B_c A_c[:, :r])`` and ``R = (Qᵀ B_c) A_c``
    give the same product without forming ``ΔW``: cost ``O((d_out + d_in)·Σr·r)``. Nested:
    ``Q[:, :j] R[:j]`` is the projection onto the first ``j`` columns for every ``j ≤ r``.

    Rank-deficient leading columns (``|T_jj| ≤ 1e-10·max_i |T_ii|`` in ``QR(ΔW[:, :r]) = Q T``,
    e.g. a column of ``ΔW`` that is zero or a combination of earlier ones): the product is the
    projection onto their span, of dimension ``q < r``: the columns of ``Q`` at the independent
    positions are the QR of the independent columns (in order, so still nested), and those at
    the ``r − q`` dependent positions are seeded orthonormal directions (from ``g``) orthogonal
    to the rest, paired with zero rows of ``R``, so they stay trainable and the result does not
    depend on rounding. (The dense QR of LAPACK would also project onto directions chosen by
    the rounding noise of those columns.) float64 in and out.
    """
    import torch

    lead = B_c @ A_c[:, :rank]  # (d_out, Σr) @ (Σr, r) -> (d_out, r)
    Q, T = torch.linalg.qr(lead)  # (d_out, r), (r, r)
    diag = T.diagonal().abs()  # (r,)
    dependent = diag <= 1e-10 * float(diag.max()) if float(diag.max()) > 0 else diag >= 0
    if bool(dependent.any()):  # an orthonormal basis of the independent columns, in order
        kept = torch.linalg.qr(lead[:, ~dependent])[0]  # (d_out, q)
        extra = torch.randn(Q.shape[0], int(dependent.sum()), generator=g, dtype=Q.dtype)
        extra = extra - kept @ (kept.T @ extra)  # (d_out, r - q), orthogonal to the kept span
        Q = torch.empty_like(Q)
        Q[:, ~dependent], Q[:, dependent] = kept, torch.linalg.qr(extra)[0]
    R = (Q.T @ B_c) @ A_c  # (r, Σr) @ (Σr, d_in) -> (r, d_in)
    R[dependent] = 0.0
    return Q.contiguous(), R.contiguous()


def balanced_split(B: torch.Tensor, M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(B U √S, √S Vᵀ)`` for ``M = U S Vᵀ``: the same product ``B M``, balanced.

    With ``B (d_out, r)`` orthonormal, the columns of the new B and the rows of the new A both
    have norm ``√σ_i``. A component with ``σ_i = 0`` keeps its unit B column (``B U``) and a
    zero A row, so it stays trainable. Signs fixed as in :func:`principal_factors` (the largest
    entry of each column of ``U`` positive). float64 math, results in ``B``'s dtype.
    """
    import torch

    U, S, Vh = torch.linalg.svd(M.to(torch.float64), full_matrices=False)  # (r, r), (r,), (r, d)
    pivot = U.gather(0, U.abs().argmax(dim=0, keepdim=True))  # (1, r)
    sign = torch.where(pivot < 0, -1.0, 1.0).to(U.dtype)
    U, Vh = U * sign, Vh * sign.T
    root = S.sqrt()  # (r,)
    B_new = B.to(torch.float64) @ (U * torch.where(root > 0, root, torch.ones_like(root)))
    A_new = root[:, None] * Vh  # (r, d_in), r <= d_in
    return B_new.to(B.dtype).contiguous(), A_new.to(B.dtype).contiguous()
