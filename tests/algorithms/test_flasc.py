"""Golden math of FLASC: global top-k masks, sparse payloads, server Adam on the mean delta."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch

from conftest import TinySetup
from conftest import assert_rejected
from conftest import run_rounds
from ilora.algorithms._flasc_sparse import decode
from ilora.algorithms._flasc_sparse import encode
from ilora.algorithms.base import create_algorithm
from ilora.config import TrainConfig
from ilora.lora.spec import LoRASpec
from ilora.tensors import num_bytes
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0, rank=2)
TEMPLATE = {"l.base": torch.zeros(3, 2), "head.weight": torch.zeros(2, 2)}
KEYS = ["head.weight", "l.lora_A", "l.lora_B"]  # sorted: the flattening order
SHAPES = {"head.weight": (2, 2), "l.lora_A": (2, 2), "l.lora_B": (3, 2)}  # N = 4 + 4 + 6 = 14


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _top_k_mask(x: np.ndarray, k: int) -> np.ndarray:
    """The reference mask: the k largest |x|, ties to the lower position (numpy stable sort)."""
    keep = np.argsort(-np.abs(x), kind="stable")[:k]
    mask = np.zeros(x.shape, dtype=bool)
    mask[keep] = True
    return mask


def _flat(d: dict[str, torch.Tensor], keys: list[str] = KEYS) -> np.ndarray:
    return np.concatenate([_np(d[k]).ravel() for k in keys])


def _state(alg, values: dict[str, torch.Tensor], clients=None):  # type: ignore[no-untyped-def]
    clients = clients or [ClientInfo(0, 2, 10), ClientInfo(1, 2, 30)]
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    return replace(state, tensors={k: v.clone() for k, v in values.items()})


def _ctx(client: ClientInfo, payload) -> ClientContext:  # type: ignore[no-untyped-def]
    base = {"l.base": TEMPLATE["l.base"]}
    return ClientContext(client, RoundInfo(1, 0), payload, SPEC, TrainConfig(), base=base)


def _values(seed: int, scale: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = scale or {}
    return {k: scale.get(k, 1.0) * torch.randn(SHAPES[k], generator=g) for k in KEYS}


def test_encode_keeps_the_top_k_values_and_int32_indices_and_decodes_exactly() -> None:
    x = torch.randn(40, generator=torch.Generator().manual_seed(0))
    sent = encode(x, 0.25)  # k = 10
    assert set(sent) == {"flasc/values", "flasc/indices"}
    assert sent["flasc/indices"].dtype == torch.int32 and sent["flasc/values"].shape == (10,)
    assert num_bytes(sent) == 4 * 10 + 4 * 10
    mask = _top_k_mask(x.numpy(), 10)
    assert np.array_equal(np.sort(sent["flasc/indices"].numpy()), np.flatnonzero(mask))
    assert np.array_equal(decode(sent, 40).numpy(), np.where(mask, x.numpy(), 0.0))
    dense = encode(x, 0.5)  # k = 20: indices would cost as much as the zeros
    assert set(dense) == {"flasc/dense"} and num_bytes(dense) == 4 * 40
    assert np.array_equal(decode(dense, 40).numpy(), np.where(_top_k_mask(x.numpy(), 20), x, 0))
    assert torch.equal(decode(encode(x, 1.0), 40), x)
    ties = torch.tensor([1.0, -2.0, 2.0, 0.5, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert encode(ties, 0.2)["flasc/indices"].tolist() == [1, 2]  # ties: lower positions


def test_download_keeps_one_global_top_k_over_all_tensors() -> None:
    alg = create_algorithm("flasc", {"density_down": 0.3})  # k = ⌊0.3·14⌋ = 4
    values = _values(1, {"l.lora_B": 10.0})  # B dominates: a per-tensor top-k would differ
    state = _state(alg, values)
    pay = alg.download(state, ClientInfo(0, 2, 10), RoundInfo(1, 0))
    assert num_bytes(pay.tensors) == 4 * (4 + 4)  # 4 values + 4 int32 indices
    assert json.loads(str(pay.config["flasc/layout"])) == [[k, list(SHAPES[k])] for k in KEYS]
    setup, _ = alg.client_init(_ctx(ClientInfo(0, 2, 10), pay), {})
    x = _flat(values)
    ref = np.where(_top_k_mask(x, 4), x, 0.0)
    assert np.array_equal(_flat(setup.factors), ref.astype(np.float32))
    assert not setup.factors["head.weight"].any() and not setup.factors["l.lora_A"].any()


def test_upload_is_the_top_k_of_masked_start_minus_trained() -> None:
    alg = create_algorithm("flasc", {"density_down": 0.5, "density_up": 0.25})  # k_ul = 3
    state = _state(alg, _values(2))
    client = ClientInfo(0, 2, 10)
    pay = alg.download(state, client, RoundInfo(1, 0))
    ctx = _ctx(client, pay)
    start, _ = alg.client_init(ctx, {})
    g = torch.Generator().manual_seed(3)
    trained = {k: v + torch.randn(v.shape, generator=g) for k, v in start.factors.items()}
    up, _ = alg.upload(trained, ctx, {})
    assert up.weight == 10.0 and num_bytes(up.tensors) == 4 * (3 + 3)
    delta = _flat(start.factors) - _flat(trained)  # masked start − trained
    ref = np.where(_top_k_mask(delta, 3), delta, 0.0)
    assert np.allclose(decode(up.tensors, 14).numpy(), ref, atol=1e-7)
    assert np.abs(ref).sum() > 0


def _adam_reference(x, grads, lr, b1=0.9, b2=0.999, eps=1e-8):  # type: ignore[no-untyped-def]
    """Adam with bias correction, written out from Kingma & Ba, in numpy."""
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        x = x - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return x


def test_server_applies_adam_to_the_weighted_mean_delta() -> None:
    alg = create_algorithm("flasc", {"density_up": 0.25, "server_lr": 0.01})  # k_ul = 3
    values = _values(4)
    state = _state(alg, values)
    g = torch.Generator().manual_seed(5)
    grads = []
    for t in (1, 2):
        deltas = {c: torch.randn(14, generator=g) for c in (0, 1)}
        ups = {c: Upload(encode(d, 0.25), [10.0, 30.0][c]) for c, d in deltas.items()}
        sparse = {c: np.where(_top_k_mask(_np(d), 3), _np(d), 0.0) for c, d in deltas.items()}
        grads.append(0.25 * sparse[0] + 0.75 * sparse[1])  # p = 10/40, 30/40
        state = alg.aggregate(state, ups, RoundInfo(t, 0))
    ref = _adam_reference(_flat(values), grads, lr=0.01)
    assert np.allclose(_flat(state.tensors), ref, atol=1e-6)
    assert state.step == 2 and alg.round_metrics(state) == {}
    assert np.abs(ref - _flat(values)).max() > 1e-3  # the step moved the model


def test_mixed_ranks_truncate_the_download_and_zero_pad_the_delta() -> None:
    clients = [ClientInfo(0, 1, 10), ClientInfo(1, 2, 30)]
    alg = create_algorithm("flasc", {"density_down": 1.0, "density_up": 1.0, "server_lr": 0.1})
    values = _values(6)
    state = _state(alg, values, clients)
    pay = alg.download(state, clients[0], RoundInfo(1, 0))
    setup, _ = alg.client_init(_ctx(clients[0], pay), {})
    assert setup.factors["l.lora_A"].shape == (1, 2) and setup.factors["l.lora_B"].shape == (3, 1)
    assert torch.equal(setup.factors["l.lora_A"], values["l.lora_A"][:1])
    assert num_bytes(pay.tensors) == 4 * (4 + 2 + 3)  # density 1: dense, N_k = head + r_k(3+2)
    trained = {k: v - 1.0 for k, v in setup.factors.items()}  # delta = +1 everywhere
    up, _ = alg.upload(trained, _ctx(clients[0], pay), {})
    new = alg.aggregate(state, {0: up}, RoundInfo(1, 0))
    # Adam's first step moves every entry with a nonzero gradient by lr (sign of −g), others not
    A_new, A_old = _np(new.tensors["l.lora_A"]), _np(values["l.lora_A"])
    assert np.allclose(A_new[0], A_old[0] - 0.1, atol=1e-6)
    assert np.array_equal(A_new[1], A_old[1].astype(np.float32))  # component 2: zero padding
    B_new, B_old = _np(new.tensors["l.lora_B"]), _np(values["l.lora_B"])
    assert np.allclose(B_new[:, 0], B_old[:, 0] - 0.1, atol=1e-6)
    assert np.array_equal(B_new[:, 1], B_old[:, 1].astype(np.float32))


def test_export_is_the_masked_global_model_unless_asked_dense() -> None:
    values = _values(7)
    for masked in (True, False):
        alg = create_algorithm("flasc", {"export_masked": masked})  # k = ⌊0.25·14⌋ = 3
        out = alg.export(_state(alg, values)).factors
        x = _flat(values)
        ref = np.where(_top_k_mask(x, 3), x, 0.0) if masked else x
        assert np.array_equal(_flat(out), ref.astype(np.float32))


def test_end_to_end_on_the_tiny_model(tiny_setup: TinySetup) -> None:
    res = run_rounds("flasc", tiny_setup)
    n = {2: 2 * (8 + 6) + 2 * (8 + 8) + 27, 4: 4 * 14 + 4 * 16 + 27, 3: 3 * 14 + 3 * 16 + 27}
    for ups, pays in zip(res.uploads, res.payloads, strict=True):
        for c in res.clients:
            k = max(1, int(0.25 * n[c.rank]))
            assert num_bytes(ups[c.cid].tensors) == num_bytes(pays[c.cid].tensors) == 8 * k
    assert res.state.step == 2


def test_invalid_hyperparameters_are_rejected() -> None:
    assert_rejected(
        "flasc",
        {"density_down": 0.0},
        {"density_up": 1.5},
        {"server_lr": 0.0},
        {"beta2": 1.0},
        {"eps": 0.0},
    )
