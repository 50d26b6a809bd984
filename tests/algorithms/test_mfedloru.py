"""Golden math of mFedLoRU: nested low-rank updates B + P^B Q^B, A + P^A Q^A of global factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinySetup
from conftest import one_layer_net
from conftest import run_rounds
from conftest import tiny_data
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.mfedloru import MFedLoRU
from ilora.algorithms.mfedloru import reconstruct
from ilora.config import TrainConfig
from ilora.engine.local import client_round
from ilora.lora.layer import LoRALinear
from ilora.lora.spec import LoRASpec
from ilora.lora.state import adapted
from ilora.lora.state import base_weights
from ilora.lora.state import load_setup
from ilora.lora.state import template
from ilora.tensors import num_bytes
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0, rank=2)  # s(4) = 1, s(2) = 2
CLIENTS = [ClientInfo(0, 4, 20), ClientInfo(1, 2, 40)]  # global rank R = 4
TRAIN = TrainConfig(steps=3, batch_size=8, lr=0.05, head_lr=0.05)
D_OUT, D_IN, R_GLOBAL = 5, 6, 4


def _net() -> nn.Module:
    return one_layer_net(SPEC)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _state(alg: MFedLoRU, seed: int = 0):  # type: ignore[no-untyped-def]
    """A server state whose factors, residual and head are all non-trivial."""
    state = alg.server_init(template(_net()), CLIENTS, SPEC, 0)
    g = torch.Generator().manual_seed(seed)
    return type(state)({k: _rand(g, *v.shape) for k, v in state.tensors.items()}, SPEC, state.rank)


def _ctx(pay: Payload, client: ClientInfo, rnd: int = 2) -> ClientContext:
    return ClientContext(client, RoundInfo(rnd, 0), pay, SPEC, TRAIN, base=base_weights(_net()))


def test_nested_layer_applies_the_updated_factors_at_the_outer_scale() -> None:
    g = torch.Generator().manual_seed(1)
    B, A = _rand(g, D_OUT, 4), _rand(g, 4, D_IN)  # outer pair, R = 4
    P_B, Q_B, P_A, Q_A = _rand(g, D_OUT, 2), _rand(g, 2, 4), _rand(g, 4, 2), _rand(g, 2, D_IN)
    R = _rand(g, D_OUT, D_IN)
    setup = LocalSetup(
        {
            "l.outer_A": A,
            "l.outer_B": B,
            "l.lora_A": Q_A,
            "l.lora_B": P_B,
            "l.inner_A": P_A,
            "l.inner_B": Q_B,
        },
        {"l.residual": R},
    )
    model = _net()
    params = load_setup(model, setup)
    assert set(params) == {"l.lora_A", "l.lora_B", "l.inner_A", "l.inner_B"}  # outer frozen
    B_k = _np(B) + _np(P_B) @ _np(Q_B)  # (5, 2) @ (2, 4)
    A_k = _np(A) + _np(P_A) @ _np(Q_A)  # (4, 2) @ (2, 6)
    ref = _np(R) + 1.0 * B_k @ A_k  # s(R = 4) = 1, not s(2) = 2
    layer = adapted(model)["l"]
    assert np.allclose(_np(layer.delta_weight()), ref, atol=1e-5)
    x = _rand(g, 7, D_IN)
    plain = nn.Linear(D_IN, D_OUT)
    with torch.no_grad():
        plain.weight.copy_(layer.base.weight + torch.from_numpy(ref).float())
        plain.bias.copy_(layer.base.bias)
    assert torch.allclose(layer(x), plain(x), atol=1e-5)


def test_nested_layer_rejects_partial_or_misshaped_updates() -> None:
    layer = LoRALinear(nn.Linear(D_IN, D_OUT), SPEC)
    layer.set_adapter(torch.zeros(2, D_IN), torch.zeros(D_OUT, 2))
    z = torch.zeros
    with pytest.raises(ValueError, match="together"):
        layer.set_nested(z(4, D_IN), z(D_OUT, 4), z(4, 2), None)
    with pytest.raises(ValueError, match="do not fit"):
        layer.set_nested(z(4, D_IN), z(D_OUT, 4), z(4, 3), z(2, 4))
    layer.set_adapter(torch.zeros(2, D_IN), torch.zeros(D_OUT, 2), torch.eye(2))
    with pytest.raises(ValueError, match="lora_C"):
        layer.set_nested(z(4, D_IN), z(D_OUT, 4), z(4, 2), z(2, 4))
    layer.set_adapter(torch.zeros(2, D_IN), torch.zeros(D_OUT, 2))
    layer.set_nested(z(4, D_IN), z(D_OUT, 4), z(4, 2), z(2, 4))
    layer.set_adapter(torch.zeros(2, D_IN), torch.zeros(D_OUT, 2))  # removes the nested update
    assert layer.outer_A is None and layer.inner_A is None and layer.scaling == SPEC.scale(2)


def test_a_small_client_starts_at_the_global_model_and_trains_only_nested_factors() -> None:
    alg, client = MFedLoRU(), CLIENTS[1]
    state = _state(alg)
    pay = alg.download(state, client, RoundInfo(2, 0))
    assert set(pay.tensors) == {"l.outer_A", "l.outer_B", "l.residual", "head.weight", "head.bias"}
    assert pay.tensors["l.outer_A"].shape == (R_GLOBAL, D_IN)
    # 4·(R·(d_out + d_in) + d_out·d_in + n_head)
    assert num_bytes(pay.tensors) == 4 * (4 * (5 + 6) + 5 * 6 + 3 * 5 + 3)
    setup, _ = alg.client_init(_ctx(pay, client), {})
    model = _net()
    params = load_setup(model, setup)
    nested = {k: p for k, p in params.items() if k.startswith("l.")}
    assert {k: tuple(p.shape) for k, p in nested.items()} == {
        "l.lora_B": (5, 2),  # P^B (d_out, r)
        "l.inner_B": (2, 4),  # Q^B (r, R)
        "l.inner_A": (4, 2),  # P^A (R, r)
        "l.lora_A": (2, 6),  # Q^A (r, d_in)
    }
    assert sum(p.numel() for p in nested.values()) == 2 * (5 + 6 + 2 * 4)  # r(m + n + 2R)
    t = state.tensors
    start = _np(t["l.residual"]) + 1.0 * _np(t["l.lora_B"]) @ _np(t["l.lora_A"])
    assert np.allclose(_np(adapted(model)["l"].delta_weight()), start, atol=1e-5)


def test_a_small_client_round_uploads_a_low_rank_update_of_each_factor() -> None:
    alg, client = MFedLoRU(), CLIENTS[1]
    state = _state(alg)
    pay = alg.download(state, client, RoundInfo(2, 0))
    model = _net()
    up, cstate = client_round(
        alg, model, tiny_data(24, 0), pay, {}, client, RoundInfo(2, 0), SPEC, TRAIN
    )
    assert cstate == {}
    assert set(up.tensors) == {
        "l.lora_A", "l.lora_B", "l.inner_A", "l.inner_B", "head.weight", "head.bias",
    }  # fmt: skip
    assert num_bytes(up.tensors) == 4 * (2 * (5 + 6 + 2 * 4) + 3 * 5 + 3)
    assert torch.equal(adapted(model)["l"].outer_A, pay.tensors["l.outer_A"])  # frozen
    full = reconstruct(state.tensors, up.tensors)
    dB = _np(full["l.lora_B"]) - _np(state.tensors["l.lora_B"])  # P^B Q^B
    dA = _np(full["l.lora_A"]) - _np(state.tensors["l.lora_A"])  # P^A Q^A
    assert np.abs(dB).max() > 1e-4 and np.abs(dA).max() > 1e-4  # both factors moved
    assert np.linalg.matrix_rank(dB, tol=1e-5) <= 2 and np.linalg.matrix_rank(dA, tol=1e-5) <= 2


def test_a_client_at_the_global_rank_trains_the_factors_directly() -> None:
    alg, client = MFedLoRU(), CLIENTS[0]
    pay = alg.download(_state(alg), client, RoundInfo(2, 0))
    assert set(pay.tensors) == {"l.lora_A", "l.lora_B", "l.residual", "head.weight", "head.bias"}
    up, _ = client_round(
        alg, _net(), tiny_data(24, 0), pay, {}, client, RoundInfo(2, 0), SPEC, TRAIN
    )
    assert set(up.tensors) == {"l.lora_A", "l.lora_B", "head.weight", "head.bias"}
    assert num_bytes(up.tensors) == 4 * (4 * (5 + 6) + 3 * 5 + 3)


def test_aggregate_reconstructs_nested_uploads_and_averages_at_the_global_rank() -> None:
    alg = MFedLoRU(tau=3)
    state = _state(alg, seed=4)
    g = torch.Generator().manual_seed(5)
    head = {"head.weight": _rand(g, 3, 5), "head.bias": _rand(g, 3)}
    full_up = {"l.lora_A": _rand(g, 4, D_IN), "l.lora_B": _rand(g, D_OUT, 4), **head}
    nested_up = {
        "l.lora_B": _rand(g, D_OUT, 2),  # P^B
        "l.inner_B": _rand(g, 2, 4),  # Q^B
        "l.inner_A": _rand(g, 4, 2),  # P^A
        "l.lora_A": _rand(g, 2, D_IN),  # Q^A
        "head.weight": torch.zeros(3, 5),
        "head.bias": torch.zeros(3),
    }
    ups = {0: Upload(full_up, 20.0), 1: Upload(nested_up, 60.0)}
    new = alg.aggregate(state, ups, RoundInfo(1, 0))
    t = state.tensors
    B1 = _np(t["l.lora_B"]) + _np(nested_up["l.lora_B"]) @ _np(nested_up["l.inner_B"])
    A1 = _np(t["l.lora_A"]) + _np(nested_up["l.inner_A"]) @ _np(nested_up["l.lora_A"])
    B = (20 * _np(full_up["l.lora_B"]) + 60 * B1) / 80
    A = (20 * _np(full_up["l.lora_A"]) + 60 * A1) / 80
    assert np.allclose(_np(new.tensors["l.lora_B"]), B, atol=1e-5)
    assert np.allclose(_np(new.tensors["l.lora_A"]), A, atol=1e-5)
    assert np.allclose(_np(new.tensors["head.weight"]), 0.25 * _np(head["head.weight"]), atol=1e-6)
    assert torch.equal(new.tensors["l.residual"], state.tensors["l.residual"])  # no merge yet
    # every client's model applies s(R) = 1: the ideal is Σ p_k B_k A_k
    exact = 0.25 * _np(full_up["l.lora_B"]) @ _np(full_up["l.lora_A"]) + 0.75 * B1 @ A1
    ref = np.linalg.norm(exact - B @ A) / np.linalg.norm(exact)
    assert new.metrics["agg_error"] == pytest.approx(ref, rel=1e-4)


def test_merge_every_tau_keeps_the_model_and_restarts_the_factors() -> None:
    alg = MFedLoRU(tau=2)
    state = _state(alg, seed=6)
    g = torch.Generator().manual_seed(7)
    ups = {
        0: Upload({"l.lora_A": _rand(g, 4, D_IN), "l.lora_B": _rand(g, D_OUT, 4)}, 1.0),
        1: Upload({"l.lora_A": _rand(g, 4, D_IN), "l.lora_B": _rand(g, D_OUT, 4)}, 3.0),
    }
    kept = alg.aggregate(state, ups, RoundInfo(1, 0))
    merged = alg.aggregate(state, ups, RoundInfo(2, 0))
    k, m = kept.tensors, merged.tensors
    before = _np(k["l.residual"]) + _np(k["l.lora_B"]) @ _np(k["l.lora_A"])
    assert np.allclose(_np(m["l.residual"]), before, atol=1e-5)  # R + s(R) B̄Ā, s(4) = 1
    assert np.array_equal(_np(m["l.lora_B"]), np.zeros((D_OUT, 4)))
    assert not torch.equal(m["l.lora_A"], k["l.lora_A"])


def test_nested_init_is_seeded_per_client_and_round() -> None:
    alg = MFedLoRU()
    pay = alg.download(_state(alg), CLIENTS[1], RoundInfo(2, 0))
    a, _ = alg.client_init(_ctx(pay, CLIENTS[1]), {})
    b, _ = alg.client_init(_ctx(pay, CLIENTS[1]), {})
    c, _ = alg.client_init(_ctx(pay, ClientInfo(5, 2, 40)), {})
    d, _ = alg.client_init(_ctx(pay, CLIENTS[1], rnd=3), {})
    assert torch.equal(a.factors["l.inner_B"], b.factors["l.inner_B"])
    assert not torch.equal(a.factors["l.inner_B"], c.factors["l.inner_B"])
    assert not torch.equal(a.factors["l.lora_A"], d.factors["l.lora_A"])
    assert not a.factors["l.lora_B"].any() and not a.factors["l.inner_A"].any()  # P = 0


def test_runs_with_mixed_ranks(tiny_setup: TinySetup) -> None:
    res = run_rounds("mfedloru", tiny_setup, rounds=2)  # ranks 2, 4, 3: global rank 4
    for ups in res.uploads:
        for cid, u in ups.items():
            r = res.clients[cid].rank
            nested = {"fc1.inner_A", "fc1.inner_B"} <= set(u.tensors)
            assert nested == (r < 4)
            assert u.tensors["fc1.lora_A"].shape == (r, 6)
    setup = create_algorithm("mfedloru").export(res.state)
    assert setup.factors["fc1.lora_A"].shape == (4, 6)


def test_invalid_tau_is_rejected() -> None:
    with pytest.raises(ValueError, match="tau"):
        create_algorithm("mfedloru", {"tau": -1})
