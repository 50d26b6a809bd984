"""Golden math of LoRA-FAIR: FedAvg plus the ridge correction of B, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ilora.algorithms.base import create_algorithm
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0, rank=2)
TEMPLATE = {"l.base": torch.zeros(3, 3), "head.weight": torch.zeros(2)}
P = [0.25, 0.75]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _case(ranks: list[int], seed: int = 1) -> tuple[list[ClientInfo], dict[int, Upload]]:
    """Two clients (weights 20, 60) on a 3x3 layer: A (r, 3), B (3, r)."""
    g = torch.Generator().manual_seed(seed)
    clients = [ClientInfo(i, r, 20 + 40 * i) for i, r in enumerate(ranks)]
    uploads = {}
    for c in clients:
        A, B = torch.randn(c.rank, 3, generator=g), torch.randn(3, c.rank, generator=g)
        head = torch.full((2,), float(c.cid + 1))
        tensors = {"l.lora_A": A, "l.lora_B": B, "head.weight": head}
        uploads[c.cid] = Upload(tensors, float(c.num_examples))
    return clients, uploads


def _reference(
    uploads: dict[int, Upload], r_max: int, lam: float, rescale: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Return Ā, B̄', ΔW* and the relative error of s(r_max)·B̄'Ā, all in numpy.

    ``rescale``: each B_k enters the average as (s_k / s(r_max))·B_k (global scale).
    """
    s_g = SPEC.alpha / r_max
    A_bar, B_bar, ideal = np.zeros((r_max, 3)), np.zeros((3, r_max)), np.zeros((3, 3))
    for cid, u in uploads.items():
        A, B = _np(u.tensors["l.lora_A"]), _np(u.tensors["l.lora_B"])
        r = A.shape[0]
        A_bar[:r] += P[cid] * A  # zero-padded to r_max
        B_bar[:, :r] += P[cid] * ((SPEC.alpha / r) / s_g if rescale else 1.0) * B
        ideal += P[cid] * (SPEC.alpha / r) * B @ A
    R = ideal / s_g - B_bar @ A_bar
    dB = R @ A_bar.T @ np.linalg.inv(A_bar @ A_bar.T + lam * np.eye(r_max))
    B_new = B_bar + dB
    err = np.linalg.norm(ideal - s_g * B_new @ A_bar) / np.linalg.norm(ideal)
    return A_bar, B_new, ideal, float(err)


@pytest.mark.parametrize("lam", [0.01, 0.5, 0.0])
def test_aggregate_is_the_ridge_closed_form(lam: float) -> None:
    clients, uploads = _case([2, 2])
    alg = create_algorithm("lora-fair", {"lam": lam})
    new = alg.aggregate(alg.server_init(TEMPLATE, clients, SPEC, 0), uploads, RoundInfo(1, 0))
    A_bar, B_new, _, err = _reference(uploads, 2, lam)
    assert np.allclose(_np(new.tensors["l.lora_A"]), A_bar, atol=1e-6)
    assert np.allclose(_np(new.tensors["l.lora_B"]), B_new, atol=1e-5)
    assert new.metrics["agg_error"] == pytest.approx(err, rel=1e-5, abs=1e-7)
    assert np.allclose(_np(new.tensors["head.weight"]), 0.25 * 1 + 0.75 * 2)
    assert alg.round_metrics(new) == new.metrics


def test_correction_beats_fedit_on_the_same_uploads() -> None:
    clients, uploads = _case([2, 2])
    errors = {}
    for name in ("fedit", "lora-fair"):
        alg = create_algorithm(name)
        state = alg.server_init(TEMPLATE, clients, SPEC, 0)
        errors[name] = alg.aggregate(state, uploads, RoundInfo(1, 0)).metrics["agg_error"]
    assert errors["lora-fair"] < errors["fedit"] - 1e-3


def test_identical_a_makes_the_aggregate_nearly_exact() -> None:
    clients, uploads = _case([2, 2])
    A = uploads[0].tensors["l.lora_A"]
    uploads[1] = Upload({**uploads[1].tensors, "l.lora_A": A}, 60.0)
    alg = create_algorithm("lora-fair", {"lam": 0.0})
    new = alg.aggregate(alg.server_init(TEMPLATE, clients, SPEC, 0), uploads, RoundInfo(1, 0))
    assert new.metrics["agg_error"] < 1e-6  # R = 0 already (FedIT is exact here)


@pytest.mark.parametrize("rescale", [True, False])
def test_mixed_ranks_pad_correct_at_r_max_and_truncate(rescale: bool) -> None:
    clients, uploads = _case([1, 2])
    alg = create_algorithm("lora-fair", {"rescale_b": rescale})
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    assert state.tensors["l.lora_A"].shape == (2, 3)
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    A_bar, B_new, _, err = _reference(uploads, 2, 0.01, rescale)
    assert np.allclose(_np(new.tensors["l.lora_B"]), B_new, atol=1e-5)
    assert new.metrics["agg_error"] == pytest.approx(err, rel=1e-5)
    small = alg.download(new, clients[0], RoundInfo(2, 0)).tensors
    ratio = (SPEC.alpha / 2) / (SPEC.alpha / 1) if rescale else 1.0  # s(r_max) / s(1)
    assert np.allclose(_np(small["l.lora_A"]), A_bar[:1], atol=1e-6)
    assert np.allclose(_np(small["l.lora_B"]), ratio * B_new[:, :1], atol=1e-5)
    g = alg.export(new).factors
    assert g["l.lora_A"].shape == (2, 3) and g["l.lora_B"].shape == (3, 2)
    if rescale:  # the rank-1 client starts at the global model's leading component, exactly
        start = (SPEC.alpha / 1) * _np(small["l.lora_B"]) @ _np(small["l.lora_A"])
        glob = (SPEC.alpha / 2) * B_new[:, :1] @ A_bar[:1]
        assert np.allclose(start, glob, atol=1e-5)


def test_round_one_download_matches_fedit() -> None:
    clients, _ = _case([1, 2])
    fair, fedit = create_algorithm("lora-fair"), create_algorithm("fedit")
    a = fair.download(fair.server_init(TEMPLATE, clients, SPEC, 0), clients[0], RoundInfo(1, 0))
    b = fedit.download(fedit.server_init(TEMPLATE, clients, SPEC, 0), clients[0], RoundInfo(1, 0))
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf")])
def test_lam_is_validated(lam: float) -> None:
    with pytest.raises(ValueError, match="lam"):
        create_algorithm("lora-fair", {"lam": lam})
