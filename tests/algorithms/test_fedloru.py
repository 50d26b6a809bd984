"""Golden math of FedLoRU: FedAvg of the factors, merged into the residual every tau rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TinySetup
from conftest import run_rounds
from ilora.algorithms.base import create_algorithm
from ilora.lora.spec import LoRASpec
from ilora.tensors import num_bytes
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload
from reference_math import moved_pairs
from reference_math import one_pair_round

SPEC = LoRASpec(alpha=4.0, rank=2)
S = 4.0 / 2  # alpha / r
CLIENTS = [ClientInfo(0, 2, 20), ClientInfo(1, 2, 60)]
W0 = np.arange(6.0).reshape(3, 2)  # (d_out, d_in)
TEMPLATE = {"l.base": torch.tensor(W0, dtype=torch.float32), "head.weight": torch.ones(2, 2)}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _train(pay: Payload, g: torch.Generator, weights: list[float]) -> dict[int, Upload]:
    return moved_pairs(pay, g, weights, CLIENTS)


def _model(tensors: dict[str, torch.Tensor], s: float = S) -> np.ndarray:
    """The global weight W0 + R + s B A of a state's tensors."""
    BA = _np(tensors["l.lora_B"]) @ _np(tensors["l.lora_A"])  # (d_out, r) @ (r, d_in)
    return W0 + _np(tensors["l.residual"]) + s * BA


def test_a_round_without_merge_averages_factors_and_head() -> None:
    alg = create_algorithm("fedloru", {"tau": 3})
    new, ups, A, B = one_pair_round(alg, TEMPLATE, CLIENTS, SPEC)
    w = [20, 60]
    heads = [_np(ups[c.cid].tensors["head.weight"]) for c in CLIENTS]
    assert np.allclose(_np(new.tensors["l.lora_A"]), A, atol=1e-6)
    assert np.allclose(_np(new.tensors["l.lora_B"]), B, atol=1e-6)
    assert np.allclose(_np(new.tensors["head.weight"]), np.average(heads, 0, w), atol=1e-6)
    assert np.array_equal(_np(new.tensors["l.residual"]), np.zeros((3, 2)))  # round 1 % 3 != 0
    # agg_error: FedIT's inexactness of the averaged product vs Σ p_k s B_k A_k
    exact = sum(
        (w[c.cid] / 80)
        * S
        * _np(ups[c.cid].tensors["l.lora_B"])
        @ _np(ups[c.cid].tensors["l.lora_A"])
        for c in CLIENTS
    )
    ref = np.linalg.norm(exact - S * B @ A) / np.linalg.norm(exact)
    assert new.metrics["agg_error"] == pytest.approx(ref, rel=1e-5)
    assert ref > 1e-2


def test_merge_at_round_tau_moves_s_ba_into_the_residual_and_restarts() -> None:
    alg = create_algorithm("fedloru", {"tau": 2})
    state = alg.server_init(TEMPLATE, CLIENTS, SPEC, 7)
    g = torch.Generator().manual_seed(3)
    state = alg.aggregate(
        state,
        _train(alg.download(state, CLIENTS[0], RoundInfo(1, 7)), g, [20, 60]),
        RoundInfo(1, 7),
    )
    R1 = _np(state.tensors["l.residual"])
    assert np.array_equal(R1, np.zeros((3, 2)))
    ups = _train(alg.download(state, CLIENTS[1], RoundInfo(2, 7)), g, [50, 10])
    new = alg.aggregate(state, ups, RoundInfo(2, 7))
    w = [50, 10]
    A = np.average([_np(ups[c.cid].tensors["l.lora_A"]) for c in CLIENTS], 0, w)
    B = np.average([_np(ups[c.cid].tensors["l.lora_B"]) for c in CLIENTS], 0, w)
    # the merge: R ← R + s B̄Ā, the factors restart at B = 0 and a fresh Kaiming-uniform A
    assert np.allclose(_np(new.tensors["l.residual"]), R1 + S * B @ A, atol=1e-5)
    assert np.array_equal(_np(new.tensors["l.lora_B"]), np.zeros((3, 2)))
    A_new = _np(new.tensors["l.lora_A"])
    assert A_new.shape == (2, 2) and np.abs(A_new).max() <= 1 / math.sqrt(2)
    assert not np.allclose(A_new, A) and not np.allclose(A_new, _np(state.tensors["l.lora_A"]))
    # the model function is unchanged by the merge: W0 + R' + s·0·A' = W0 + R + s B̄Ā
    assert np.allclose(_model(new.tensors), W0 + R1 + S * B @ A, atol=1e-5)
    heads = [_np(ups[c.cid].tensors["head.weight"]) for c in CLIENTS]
    assert np.allclose(_np(new.tensors["head.weight"]), np.average(heads, 0, w), atol=1e-6)
    # the restart is seeded by (seed, round): the same run gives the same A, another round not
    again = alg.aggregate(state, ups, RoundInfo(2, 7))
    assert torch.equal(again.tensors["l.lora_A"], new.tensors["l.lora_A"])
    other = create_algorithm("fedloru", {"tau": 1}).aggregate(state, ups, RoundInfo(3, 7))
    assert not torch.equal(other.tensors["l.lora_A"], new.tensors["l.lora_A"])


def test_rank_of_the_global_update_grows_with_the_merges() -> None:
    """Every merge adds a rank-r product: after two merges at r = 1 the update has rank 2."""
    spec, clients = LoRASpec(alpha=1.0, rank=1), [ClientInfo(0, 1, 10), ClientInfo(1, 1, 10)]
    template = {"l.base": torch.zeros(5, 4)}
    alg, g = create_algorithm("fedloru", {"tau": 1}), torch.Generator().manual_seed(0)
    state = alg.server_init(template, clients, spec, 0)
    ref = np.zeros((5, 4))
    for t in (1, 2):
        pay = alg.download(state, clients[0], RoundInfo(t, 0)).tensors
        ups = {
            c.cid: Upload(
                {
                    "l.lora_A": pay["l.lora_A"] + torch.randn(1, 4, generator=g),
                    "l.lora_B": pay["l.lora_B"] + torch.randn(5, 1, generator=g),
                },
                10.0,
            )
            for c in clients
        }
        A = np.mean([_np(u.tensors["l.lora_A"]) for u in ups.values()], 0)
        B = np.mean([_np(u.tensors["l.lora_B"]) for u in ups.values()], 0)
        ref += 1.0 * B @ A
        state = alg.aggregate(state, ups, RoundInfo(t, 0))
        assert np.allclose(_np(state.tensors["l.residual"]), ref, atol=1e-5)
    assert np.linalg.matrix_rank(_np(state.tensors["l.residual"]), tol=1e-4) == 2


def test_download_carries_factors_at_the_client_rank_residual_and_head() -> None:
    clients = [ClientInfo(0, 1, 30), ClientInfo(1, 2, 10)]
    alg = create_algorithm("fedloru")
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    pay = alg.download(state, clients[0], RoundInfo(1, 0))
    assert set(pay.tensors) == {"l.lora_A", "l.lora_B", "l.residual", "head.weight"}
    assert pay.tensors["l.lora_A"].shape == (1, 2) and pay.tensors["l.lora_B"].shape == (3, 1)
    assert torch.equal(pay.tensors["l.lora_A"], state.tensors["l.lora_A"][:1])
    # 4·(r·(d_out + d_in) + d_out·d_in + n_head) at r = 1
    assert num_bytes(pay.tensors) == 4 * (1 * (3 + 2) + 3 * 2 + 2 * 2)
    setup, _ = alg.client_init(_ctx(pay, clients[0]), {})
    assert set(setup.factors) == {"l.lora_A", "l.lora_B", "head.weight"}
    assert set(setup.residual) == {"l.residual"} and setup.trainable is None


def test_mixed_ranks_zero_pad_before_averaging() -> None:
    clients = [ClientInfo(0, 1, 30), ClientInfo(1, 2, 10)]
    alg, g = create_algorithm("fedloru", {"tau": 0}), torch.Generator().manual_seed(5)
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    ups = {
        c.cid: Upload(
            {
                "l.lora_A": torch.randn(c.rank, 2, generator=g),
                "l.lora_B": torch.randn(3, c.rank, generator=g),
                "head.weight": torch.zeros(2, 2),
            },
            float(c.num_examples),
        )
        for c in clients
    }
    new = alg.aggregate(state, ups, RoundInfo(5, 0))  # tau = 0: never merges
    A0, A1 = _np(ups[0].tensors["l.lora_A"]), _np(ups[1].tensors["l.lora_A"])
    ref = (30 * np.vstack([A0, np.zeros((1, 2))]) + 10 * A1) / 40
    assert np.allclose(_np(new.tensors["l.lora_A"]), ref, atol=1e-6)
    assert np.array_equal(_np(new.tensors["l.residual"]), np.zeros((3, 2)))


def test_runs_and_exports_the_merged_model(tiny_setup: TinySetup) -> None:
    res = run_rounds("fedloru", tiny_setup, rounds=2)
    for ups in res.uploads:
        for cid, u in ups.items():
            r = res.clients[cid].rank
            assert set(u.tensors) == {
                "fc1.lora_A",
                "fc1.lora_B",
                "fc2.lora_A",
                "fc2.lora_B",
                "classifier.weight",
                "classifier.bias",
            }
            assert u.tensors["fc1.lora_A"].shape == (r, 6)
    setup = create_algorithm("fedloru").export(res.state)
    assert set(setup.residual) == {"fc1.residual", "fc2.residual"}


@pytest.mark.parametrize("tau", [-1, -5])
def test_invalid_tau_is_rejected(tau: int) -> None:
    with pytest.raises(ValueError, match="tau"):
        create_algorithm("fedloru", {"tau": tau})


def _ctx(payload: Payload, client: ClientInfo):  # type: ignore[no-untyped-def]
    from ilora.types import ClientContext

    return ClientContext(
        client, RoundInfo(1, 0), payload, SPEC, TinySetup(SPEC, [2]).train, base=TEMPLATE
    )
