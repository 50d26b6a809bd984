"""Golden math of FlexLoRA: per-client best rank-r factors of Σ p_k s_k B_k A_k (numpy SVD)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ilora.algorithms._shared import init_factors
from ilora.algorithms.base import create_algorithm
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0, rank=2)
TEMPLATE = {"l.base": torch.zeros(3, 3), "head.weight": torch.zeros(2)}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _case(
    ranks: list[int], seed: int = 1, dense: bool = False
) -> tuple[object, object, dict[int, Upload], np.ndarray, list[ClientInfo]]:
    """Two clients (weights 20, 60) on a 3x3 layer; returns the dense ideal Σ p_k s_k B_k A_k."""
    g = torch.Generator().manual_seed(seed)
    clients = [ClientInfo(i, r, 20 + 40 * i) for i, r in enumerate(ranks)]
    alg = create_algorithm("flexlora", {"dense": dense})
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    uploads, ref = {}, np.zeros((3, 3))
    for c in clients:
        A, B = torch.randn(c.rank, 3, generator=g), torch.randn(3, c.rank, generator=g)
        head = torch.full((2,), float(c.cid + 1))
        tensors = {"l.lora_A": A, "l.lora_B": B, "head.weight": head}
        uploads[c.cid] = Upload(tensors, float(c.num_examples))
        ref += [0.25, 0.75][c.cid] * (SPEC.alpha / c.rank) * (_np(B) @ _np(A))
    return alg, state, uploads, ref, clients


def _best(ref: np.ndarray, r: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(ref)
    return (u[:, :r] * s[:r]) @ vt[:r]


@pytest.mark.parametrize("dense", [False, True])
def test_download_is_the_best_rank_r_approximation(dense: bool) -> None:
    alg, state, uploads, ref, clients = _case([2, 2], dense=dense)
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    pay = alg.download(new, clients[0], RoundInfo(2, 0)).tensors
    B, A = _np(pay["l.lora_B"]), _np(pay["l.lora_A"])
    assert np.allclose((SPEC.alpha / 2) * B @ A, _best(ref, 2), atol=1e-5)
    s = np.linalg.svd(ref, compute_uv=False)[:2]  # √S on both sides, 1/s_j on A
    assert np.allclose(B.T @ B, np.diag(s), atol=1e-5)
    sA = (SPEC.alpha / 2) * A
    assert np.allclose(sA @ sA.T, np.diag(s), atol=1e-5)
    assert np.allclose(_np(pay["head.weight"]), 0.25 * 1 + 0.75 * 2)


@pytest.mark.parametrize("dense", [False, True])
def test_agg_error_is_the_eckart_young_tail(dense: bool) -> None:
    alg, state, uploads, ref, _ = _case([2, 2], dense=dense)
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    s = np.linalg.svd(ref, compute_uv=False)
    assert s[2] > 1e-3  # rank(ΔW) = 3 > r_max = 2: something is truncated
    tail = np.sqrt((s[2:] ** 2).sum() / (s**2).sum())
    assert new.metrics["agg_error"] == pytest.approx(tail, rel=1e-5)
    g = alg.export(new).factors  # the global model applies s(r_max)
    applied = (SPEC.alpha / 2) * _np(g["l.lora_B"]) @ _np(g["l.lora_A"])
    assert np.allclose(applied, _best(ref, 2), atol=1e-5)
    assert alg.round_metrics(new) == new.metrics


def test_mixed_ranks_fold_scalings_and_a_covering_rank_is_exact() -> None:
    alg, state, uploads, ref, clients = _case([1, 3])
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    assert new.metrics["agg_error"] < 1e-6  # r_max = 3 covers rank(ΔW) <= 3
    for c in clients:
        pay = alg.download(new, c, RoundInfo(2, 0)).tensors
        got = (SPEC.alpha / c.rank) * _np(pay["l.lora_B"]) @ _np(pay["l.lora_A"])
        assert np.allclose(got, _best(ref, c.rank), atol=1e-5)
    g = alg.export(new).factors
    assert np.allclose((SPEC.alpha / 3) * _np(g["l.lora_B"]) @ _np(g["l.lora_A"]), ref, atol=1e-5)


def test_round_one_is_the_standard_lora_init_for_everyone() -> None:
    alg, state, _, _, clients = _case([2, 3])
    for c in clients:
        pay = alg.download(state, c, RoundInfo(1, 0)).tensors
        init = init_factors(TEMPLATE, c.rank, SPEC, 0, "lora-init")
        assert torch.equal(pay["l.lora_A"], init["l.lora_A"]) and pay["l.lora_A"].abs().sum() > 0
        assert torch.equal(pay["l.lora_B"], torch.zeros(3, c.rank))


def test_missing_components_stay_trainable_and_leave_the_product_unchanged() -> None:
    alg, state, _, _, clients = _case([1, 3])
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 3, generator=g), torch.randn(3, 1, generator=g)
    uploads = {  # both products are multiples of b a: rank(ΔW) = 1 < 3
        0: Upload({"l.lora_A": a, "l.lora_B": b}, 20.0),
        1: Upload({"l.lora_A": torch.cat([a, 0 * a, 0 * a]), "l.lora_B": b.repeat(1, 3)}, 60.0),
    }
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    assert new.support == {"l": 1}
    pay = alg.download(new, clients[1], RoundInfo(2, 0)).tensors
    ref = (0.25 * 4.0 + 0.75 * 4.0 / 3) * _np(b) @ _np(a)
    assert np.allclose((4.0 / 3) * _np(pay["l.lora_B"]) @ _np(pay["l.lora_A"]), ref, atol=1e-5)
    init = init_factors(TEMPLATE, 3, SPEC, 0, "lora-init")
    assert torch.equal(pay["l.lora_A"][1:], init["l.lora_A"][1:])  # random rows: B's grads live
    assert torch.equal(pay["l.lora_B"][:, 1:], torch.zeros(3, 2))


def test_aggregate_does_not_mutate_its_inputs() -> None:
    alg, state, uploads, _, _ = _case([2, 2])
    before = {c: {k: v.clone() for k, v in u.tensors.items()} for c, u in uploads.items()}
    factors = {k: v.clone() for k, v in state.factors.items()}
    alg.aggregate(state, uploads, RoundInfo(1, 0))
    assert all(torch.equal(state.factors[k], v) for k, v in factors.items())
    assert all(torch.equal(uploads[c].tensors[k], v) for c in before for k, v in before[c].items())


def test_dense_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="dense"):
        create_algorithm("flexlora", {"dense": "yes"})
