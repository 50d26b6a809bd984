from __future__ import annotations

import numpy as np
import torch

from ilora.lora.linalg import (
    fro_norm_sq,
    qr_init,
    relative_error,
    resize_rank,
    stack,
    svd_of_product,
)

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
