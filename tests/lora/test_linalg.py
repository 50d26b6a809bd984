from __future__ import annotations

import numpy as np
import pytest
import torch

from ilora.lora.linalg import balanced_split
from ilora.lora.linalg import fro_norm_sq
from ilora.lora.linalg import leading_qr_of_sum
from ilora.lora.linalg import qr_init
from ilora.lora.linalg import relative_error
from ilora.lora.linalg import resize_rank
from ilora.lora.linalg import stack
from ilora.lora.linalg import svd_of_product

G = torch.Generator().manual_seed(0)


def test_stack_gives_the_weighted_sum_of_products() -> None:
    Bs = [torch.randn(5, r, generator=G) for r in (1, 3)]
    As = [torch.randn(r, 4, generator=G) for r in (1, 3)]
    B_c, A_c = stack(Bs, As, [0.3, 0.7])
    ref = 0.3 * Bs[0] @ As[0] + 0.7 * Bs[1] @ As[1]
    assert B_c.shape == (5, 4) and torch.allclose((B_c @ A_c).float(), ref, atol=1e-6)


def test_svd_of_product_matches_numpy_svd() -> None:
    B, A = torch.randn(7, 3, generator=G), torch.randn(3, 5, generator=G)
    U, S, Vh = svd_of_product(B, A)
    s_ref = np.linalg.svd((B @ A).double().numpy(), compute_uv=False)
    assert np.allclose(S.numpy(), s_ref[:3], atol=1e-6)
    assert torch.allclose(U @ torch.diag(S) @ Vh, (B @ A).double(), atol=1e-6)


def test_norms_in_factor_space() -> None:
    B, A = torch.randn(6, 2, generator=G), torch.randn(2, 4, generator=G)
    assert np.isclose(fro_norm_sq(B, A), float(torch.linalg.norm(B @ A) ** 2), rtol=1e-5)
    B2, A2 = torch.randn(6, 1, generator=G), torch.randn(1, 4, generator=G)
    ref = torch.linalg.norm(B @ A - B2 @ A2) / torch.linalg.norm(B @ A)
    assert np.isclose(relative_error((B, A), (B2, A2)), float(ref), rtol=1e-5)


def test_qr_init_rescales_to_the_target_rms() -> None:
    W = torch.randn(8, 6, generator=G)
    B, A = qr_init(W, 3, target_rms=1e-4)
    assert np.isclose(float(torch.linalg.norm(B @ A)), 1e-4 * np.sqrt(48), rtol=1e-4)


def test_resize_rank_pads_and_truncates() -> None:
    A = torch.ones(2, 3)
    assert resize_rank(A, 4, "lora_A").shape == (4, 3) and resize_rank(A, 1, "lora_A").shape == (
        1,
        3,
    )
    B = torch.ones(3, 2)
    assert resize_rank(B, 4, "lora_B")[:, 2:].abs().sum() == 0
    assert resize_rank(B, 4, "classifier.weight" and "param").shape == (3, 2)


def test_principal_factors_are_the_svd_with_fixed_signs() -> None:
    from ilora.lora.linalg import principal_factors

    B, A = torch.randn(9, 4, generator=G), torch.randn(4, 7, generator=G)
    U, M, sq = principal_factors(B, A)
    dense = (B.double() @ A.double()).numpy()
    s_ref = np.linalg.svd(dense, compute_uv=False)
    assert np.allclose(np.sqrt(sq.numpy()), s_ref[:4], atol=1e-6)
    assert torch.allclose(U.T @ U, torch.eye(4, dtype=U.dtype), atol=1e-10)
    assert np.allclose((U @ M).numpy(), dense, atol=1e-10)
    for r in (1, 2, 3):  # leading r rows: the best rank-r approximation
        u, s, vt = np.linalg.svd(dense)
        assert np.allclose((U[:, :r] @ M[:r]).numpy(), (u[:, :r] * s[:r]) @ vt[:r], atol=1e-8)
    U2, _, _ = principal_factors(-B, -A)  # same product, same factors
    assert torch.allclose(U2, U, atol=1e-10)


def test_principal_factors_of_a_weighted_sum_give_its_best_rank_k_approximation() -> None:
    from ilora.lora.linalg import principal_factors_of_sum

    g = torch.Generator().manual_seed(3)
    ranks, coeffs = [1, 3, 2], [0.5, -2.0, 1.5]
    Bs = [torch.randn(7, r, generator=g) for r in ranks]  # (d_out, r_k)
    As = [torch.randn(r, 5, generator=g) for r in ranks]  # (r_k, d_in)
    terms = zip(Bs, As, coeffs, strict=True)
    dense = sum(c * B.double().numpy() @ A.double().numpy() for B, A, c in terms)  # (7, 5)
    U_np, S_np, Vt_np = np.linalg.svd(dense)
    U, M, sq = principal_factors_of_sum(Bs, As, coeffs, rank=2)
    assert U.shape == (7, 2) and M.shape == (2, 5) and sq.shape == (6,)  # min(d_out, Σr_k)
    best = U_np[:, :2] * S_np[:2] @ Vt_np[:2]  # Eckart–Young
    assert np.allclose(U.numpy() @ M.numpy(), best, atol=1e-10)
    assert np.allclose(U.numpy().T @ U.numpy(), np.eye(2), atol=1e-12)
    assert np.allclose(sq.numpy()[:5], S_np**2, atol=1e-10) and abs(sq[5]) < 1e-10
    full_U, full_M, _ = principal_factors_of_sum(Bs, As, coeffs)
    assert np.allclose(full_U.numpy() @ full_M.numpy(), dense, atol=1e-10)


def _factors_of_sum(
    seed: int, d_out: int = 40, d_in: int = 30, ranks: tuple[int, ...] = (2, 4, 8)
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    total = sum(ranks)
    B_c = torch.randn(d_out, total, generator=g, dtype=torch.float64)  # (d_out, Σr)
    A_c = torch.randn(total, d_in, generator=g, dtype=torch.float64)  # (Σr, d_in)
    return B_c, A_c


@pytest.mark.parametrize("r", [1, 3, 8])
def test_factor_space_qr_equals_the_leading_columns_of_numpys_dense_qr(r: int) -> None:
    B_c, A_c = _factors_of_sum(0)
    Q, R = leading_qr_of_sum(B_c, A_c, r, torch.Generator().manual_seed(1))
    dense = B_c.numpy() @ A_c.numpy()  # ΔW (40, 30), formed only here
    q, t = np.linalg.qr(dense)
    for j in range(1, r + 1):  # nested: every leading part is the dense QR's
        want = q[:, :j] @ t[:j]
        got = Q[:, :j].numpy() @ R[:j].numpy()
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6
    assert np.allclose(Q.T.numpy() @ Q.numpy(), np.eye(r), atol=1e-10)


def test_factor_space_qr_of_rank_deficient_leading_columns_projects_onto_their_span() -> None:
    B_c, A_c = _factors_of_sum(2)
    A_c[:, 1] = 2 * A_c[:, 0]  # column 1 of ΔW = 2 × column 0
    A_c[:, 3] = 0  # column 3 of ΔW = 0
    r = 5
    Q, R = leading_qr_of_sum(B_c, A_c, r, torch.Generator().manual_seed(1))
    dense = B_c.numpy() @ A_c.numpy()
    u, s, _ = np.linalg.svd(dense[:, :r], full_matrices=False)
    span = u[:, s > 1e-8 * s[0]]  # (40, 3): the leading columns have rank 3
    want = span @ (span.T @ dense)  # projection of ΔW onto their span
    got = Q.numpy() @ R.numpy()
    assert span.shape[1] == 3
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6
    assert np.allclose(Q.T.numpy() @ Q.numpy(), np.eye(r), atol=1e-10)  # all r trainable
    assert torch.equal(R[[1, 3]], torch.zeros(2, R.shape[1]))  # dependent columns: zero rows
    again, _ = leading_qr_of_sum(B_c, A_c, r, torch.Generator().manual_seed(1))
    assert torch.equal(Q, again)  # the completion is seeded


def test_balanced_split_keeps_the_product_and_balances_the_factors() -> None:
    g = torch.Generator().manual_seed(3)
    B, _ = torch.linalg.qr(torch.randn(12, 4, generator=g, dtype=torch.float64))  # orthonormal
    M = torch.randn(4, 9, generator=g, dtype=torch.float64)
    M[3] = 0  # a zero component stays trainable through its B column
    Bn, An = balanced_split(B, M)
    assert torch.allclose(Bn @ An, B @ M, atol=1e-12)
    s = np.linalg.svd(M.numpy(), compute_uv=False)
    assert np.allclose(Bn.norm(dim=0).numpy()[:3], np.sqrt(s[:3]), atol=1e-10)
    assert np.allclose(An.norm(dim=1).numpy()[:3], np.sqrt(s[:3]), atol=1e-10)
    assert float(An[3].abs().max()) < 1e-12 and Bn[:, 3].norm() == pytest.approx(1.0)
