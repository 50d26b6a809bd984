"""Golden math of FSLoRA: seeded sketches, sliced local training (eq. 4), the server's eq. 5."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TinyMLP
from conftest import TinySetup
from conftest import run_rounds
from conftest import tiny_data
from ilora.algorithms._shared import FactorState
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.fslora import sketch_indices
from ilora.config import TrainConfig
from ilora.engine.local import client_round
from ilora.engine.local import make_context
from ilora.lora.spec import LoRASpec
from ilora.lora.state import load_setup
from ilora.lora.state import template
from ilora.tensors import num_bytes
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload

SHAPES = {"a": (5, 4), "b": (4, 6)}  # (d_out, d_in) of two adapted layers
TEMPLATE = {
    **{f"{m}.base": torch.zeros(s) for m, s in SHAPES.items()},
    "head.weight": torch.zeros(2, 2),
}
CLIENTS = [ClientInfo(0, 1, 20), ClientInfo(1, 2, 60), ClientInfo(2, 3, 40)]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _random_state(alg: object, spec: LoRASpec, seed: int) -> FactorState:
    """The server's init with B and A replaced by random factors (B = 0 hides slicing bugs)."""
    state: FactorState = alg.server_init(TEMPLATE, CLIENTS, spec, 0)  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(v.shape, generator=g) for k, v in state.tensors.items()}
    return replace(state, tensors=tensors)


def _indices(state_A: np.ndarray, sent_A: np.ndarray) -> list[int]:
    """Recover the sketch from the payload: which rows of the global A were sent."""
    return [int(np.flatnonzero((state_A == row).all(axis=1))[0]) for row in sent_A]


def _trained(pay: Payload, g: torch.Generator, weight: float) -> Upload:
    """A client's upload: its received slices moved by noise (a stand-in for training)."""
    return Upload(
        {k: v + torch.randn(v.shape, generator=g) for k, v in pay.tensors.items()}, weight
    )


def test_sketch_is_reproducible_from_the_seed() -> None:
    a = sketch_indices(3, 2, 1, "fc1", 8, 3)
    assert torch.equal(a, sketch_indices(3, 2, 1, "fc1", 8, 3))
    assert a.tolist() == sorted(set(a.tolist())) and len(a) == 3 and 0 <= int(a.min())
    assert int(a.max()) < 8
    draws = {tuple(sketch_indices(3, t, 1, "fc1", 8, 3).tolist()) for t in range(1, 30)}
    assert len(draws) > 5  # a fresh sketch every round
    counts = np.zeros(8)
    for t in range(1, 801):
        counts[sketch_indices(0, t, 0, "fc1", 8, 2).numpy()] += 1
    assert np.allclose(counts / 800, 2 / 8, atol=0.05)  # uniform: P(j ∈ I) = k/r


def test_download_sends_the_sketched_slices_drawn_from_the_seed() -> None:
    alg = create_algorithm("fslora", {"global_rank": 4})
    state = _random_state(alg, LoRASpec(alpha=2.0, rank=4), 1)
    for c in CLIENTS:
        pay = alg.download(state, c, RoundInfo(3, 7))
        assert pay.config["global_rank"] == 4
        for m in SHAPES:
            idx = sketch_indices(7, 3, c.cid, m, 4, c.rank)
            A, B = state.tensors[f"{m}.lora_A"], state.tensors[f"{m}.lora_B"]
            assert torch.equal(pay.tensors[f"{m}.lora_A"], A[idx])  # (k, d_in)
            assert torch.equal(pay.tensors[f"{m}.lora_B"], B[:, idx])  # (d_out, k)
            assert _indices(_np(A), _np(pay.tensors[f"{m}.lora_A"])) == idx.tolist()
        again = alg.download(state, c, RoundInfo(3, 7)).tensors
        assert all(torch.equal(again[k], v) for k, v in pay.tensors.items())
        per_layer = sum(c.rank * (d_out + d_in) for d_out, d_in in SHAPES.values())
        assert num_bytes(pay.tensors) == 4 * (per_layer + 4)


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [20.0, 60.0, 40.0]])
def test_server_update_is_eq5(weights: list[float]) -> None:
    """B ← B + Σ p_i Z_i(ΔB_i), A likewise, p_i = 1/|S| for equal weights (the paper's eq. 5);
    no per-column renormalisation. Indices are recovered from the payloads, not from the code."""
    alg = create_algorithm("fslora", {"global_rank": 4})
    rnd, g = RoundInfo(2, 5), torch.Generator().manual_seed(3)
    state = _random_state(alg, LoRASpec(alpha=2.0, rank=4), 2)
    pays = {c.cid: alg.download(state, c, rnd) for c in CLIENTS}
    ups = {c.cid: _trained(pays[c.cid], g, weights[c.cid]) for c in CLIENTS}
    new = alg.aggregate(state, ups, rnd)
    p = np.array(weights) / sum(weights)
    for m in SHAPES:
        A, B = _np(state.tensors[f"{m}.lora_A"]), _np(state.tensors[f"{m}.lora_B"])
        dA, dB = np.zeros_like(A), np.zeros_like(B)
        for c in CLIENTS:
            idx = _indices(A, _np(pays[c.cid].tensors[f"{m}.lora_A"]))
            dA[idx] += p[c.cid] * (_np(ups[c.cid].tensors[f"{m}.lora_A"]) - A[idx])
            dB[:, idx] += p[c.cid] * (_np(ups[c.cid].tensors[f"{m}.lora_B"]) - B[:, idx])
        assert np.allclose(_np(new.tensors[f"{m}.lora_A"]), A + dA, atol=1e-6)
        assert np.allclose(_np(new.tensors[f"{m}.lora_B"]), B + dB, atol=1e-6)
    heads = [_np(ups[c.cid].tensors["head.weight"]) for c in CLIENTS]
    assert np.allclose(_np(new.tensors["head.weight"]), np.average(heads, 0, weights), atol=1e-6)


def test_agg_error_compares_with_the_clients_sketched_adapters() -> None:
    """agg_error = ‖s B'A' − Σ p_i s (r/k_i) B̃_i Ã_i‖ / ‖Σ ...‖ over both layers."""
    spec = LoRASpec(alpha=2.0, rank=4, rslora=True)
    alg, rnd = create_algorithm("fslora", {"global_rank": 4}), RoundInfo(1, 0)
    state = _random_state(alg, spec, 4)
    g = torch.Generator().manual_seed(9)
    ups = {c.cid: _trained(alg.download(state, c, rnd), g, float(c.num_examples)) for c in CLIENTS}
    new = alg.aggregate(state, ups, rnd)
    s, p = spec.scale(4), np.array([20.0, 60.0, 40.0]) / 120
    num = den = 0.0
    for m in SHAPES:
        ideal = sum(
            p[c.cid]
            * s
            * (4 / c.rank)
            * _np(ups[c.cid].tensors[f"{m}.lora_B"])
            @ _np(ups[c.cid].tensors[f"{m}.lora_A"])
            for c in CLIENTS
        )
        got = s * _np(new.tensors[f"{m}.lora_B"]) @ _np(new.tensors[f"{m}.lora_A"])
        num, den = num + np.sum((ideal - got) ** 2), den + np.sum(ideal**2)
    assert new.metrics["agg_error"] == pytest.approx(np.sqrt(num / den), rel=1e-6)


def _random_start(
    model: torch.nn.Module, clients: list[ClientInfo], spec: LoRASpec, seed: int
) -> tuple[Any, Any, torch.Generator]:
    """Return FSLoRA, its state with random global factors (not B = 0) and the generator."""
    alg = create_algorithm("fslora")
    state = alg.server_init(template(model), clients, spec, 0)
    g = torch.Generator().manual_seed(seed)
    lora = [k for k in state.tensors if ".lora_" in k]
    factors = {k: torch.randn(state.tensors[k].shape, generator=g) for k in lora}
    return alg, replace(state, tensors={**state.tensors, **factors}), g


@pytest.mark.parametrize("rslora", [False, True])
def test_client_model_and_gradients_are_eq4(rslora: bool) -> None:
    """The installed slices give the forward W0 + s(r)·B S A and exactly its B, A gradients on
    the selected columns/rows, for plain α/r (no core) and rsLoRA (a frozen core c·I)."""
    spec = LoRASpec(alpha=4.0, rank=6, rslora=rslora)
    setup = TinySetup(spec, [2, 6])
    model, clients = setup.model(), setup.clients()
    alg, state, g = _random_start(model, clients, spec, 2)
    c, rnd, r = clients[0], RoundInfo(1, 0), 6
    pay = alg.download(state, c, rnd)
    ctx = make_context(model, pay, c, rnd, spec, setup.train)
    local, _ = alg.client_init(ctx, {})
    assert ("fc1.lora_C" in local.factors) == rslora  # c = sqrt(r/k) under rsLoRA, else 1
    params = load_setup(model, local)
    assert set(params) == set(pay.tensors)  # the core is frozen
    x = torch.randn(5, 6, generator=g)
    out = model(x)
    out.square().sum().backward()

    plain, s = TinyMLP(), spec.scale(r)
    full: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    W: dict[str, torch.Tensor] = {}
    for m in ("fc1", "fc2"):
        B = state.tensors[f"{m}.lora_B"].clone().requires_grad_(True)  # (d_out, r)
        A = state.tensors[f"{m}.lora_A"].clone().requires_grad_(True)  # (r, d_in)
        idx = _indices(_np(A.detach()), _np(pay.tensors[f"{m}.lora_A"]))
        S = torch.zeros(r, r)
        S[idx, idx] = r / c.rank  # S_i = (r/k) Σ e_j e_jᵀ
        full[m] = (B, A, torch.tensor(idx))
        W[m] = getattr(plain, m).weight.detach() + s * B @ S @ A  # (d_out, d_in)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.nn.functional.linear(x, W["fc1"], plain.fc1.bias))
        h = torch.relu(torch.nn.functional.linear(h, W["fc2"], plain.fc2.bias))
        return plain.classifier(h)

    ref = forward(x)
    assert torch.allclose(out, ref, atol=1e-5)
    ref.square().sum().backward()
    for m, (B, A, idx) in full.items():
        assert B.grad is not None and A.grad is not None
        assert torch.allclose(params[f"{m}.lora_B"].grad, B.grad[:, idx], atol=1e-4)
        assert torch.allclose(params[f"{m}.lora_A"].grad, A.grad[idx], atol=1e-4)
        rest = torch.ones(r, dtype=torch.bool)
        rest[idx] = False
        assert float(B.grad[:, rest].abs().max()) == 0.0  # eq. 4 moves nothing else


def test_components_outside_the_sketch_are_bitwise_unchanged_after_a_round() -> None:
    """Real local training with AdamW and weight decay: the unselected columns of B and rows of
    A keep their exact values, the selected ones move; the upload is k·(d_in + d_out) per layer
    plus the head, and carries no core."""
    spec = LoRASpec(alpha=4.0, rank=6, rslora=True)
    setup = TinySetup(spec, [2, 6], TrainConfig(steps=3, batch_size=8, lr=0.05, weight_decay=0.1))
    model, clients = setup.model(), setup.clients()
    alg, state, g = _random_start(model, clients, spec, 5)
    c, rnd = clients[0], RoundInfo(1, 0)
    pay = alg.download(state, c, rnd)
    up, _ = client_round(alg, model, tiny_data(24, 1), pay, {}, c, rnd, spec, setup.train)
    assert set(up.tensors) == {f"fc{i}.lora_{f}" for i in (1, 2) for f in "AB"} | {
        "classifier.weight",
        "classifier.bias",
    }
    assert num_bytes(up.tensors) == 4 * (2 * (6 + 8) + 2 * (8 + 8) + 8 * 3 + 3)
    new = alg.aggregate(state, {c.cid: up}, rnd)
    for m in ("fc1", "fc2"):
        A0, A1 = state.tensors[f"{m}.lora_A"], new.tensors[f"{m}.lora_A"]
        B0, B1 = state.tensors[f"{m}.lora_B"], new.tensors[f"{m}.lora_B"]
        idx = _indices(_np(A0), _np(pay.tensors[f"{m}.lora_A"]))
        rest = [j for j in range(6) if j not in idx]
        assert torch.equal(A1[rest], A0[rest]) and torch.equal(B1[:, rest], B0[:, rest])
        assert not torch.equal(A1[idx], A0[idx]) and not torch.equal(B1[:, idx], B0[:, idx])
        assert torch.allclose(A1[idx], up.tensors[f"{m}.lora_A"], atol=1e-6)  # one client: p = 1


def test_traffic_is_k_components_per_layer_plus_the_head(tiny_setup: TinySetup) -> None:
    res = run_rounds("fslora", tiny_setup, rounds=2)
    ranks = {c.cid: c.rank for c in res.clients}
    assert sorted(set(ranks.values())) == [2, 3, 4]
    for group in [*res.payloads, *res.uploads]:
        for cid, item in group.items():
            k = ranks[cid]
            assert num_bytes(item.tensors) == 4 * (k * (6 + 8) + k * (8 + 8) + 8 * 3 + 3)
    assert res.state.rank == 4 and np.isfinite(res.state.metrics["agg_error"])


def test_same_ranks_and_full_sketch_is_fedavg_of_the_factors() -> None:
    """k = r: S = I, every client trains all components and eq. 5 is the plain mean."""
    clients = [ClientInfo(0, 2, 10), ClientInfo(1, 2, 30)]
    alg, rnd, g = create_algorithm("fslora"), RoundInfo(1, 0), torch.Generator().manual_seed(1)
    state = alg.server_init(TEMPLATE, clients, LoRASpec(rank=2), 0)
    ups = {c.cid: _trained(alg.download(state, c, rnd), g, float(c.num_examples)) for c in clients}
    new = alg.aggregate(state, ups, rnd)
    for m in SHAPES:
        for f in "AB":
            ref = np.average([_np(ups[c.cid].tensors[f"{m}.lora_{f}"]) for c in clients], 0, [1, 3])
            assert np.allclose(_np(new.tensors[f"{m}.lora_{f}"]), ref, atol=1e-6)


def test_global_rank_is_validated() -> None:
    with pytest.raises(ValueError, match="global_rank"):
        create_algorithm("fslora", {"global_rank": -1})
    with pytest.raises(ValueError, match="global_rank"):
        create_algorithm("fslora", {"global_rank": 2}).server_init(TEMPLATE, CLIENTS, LoRASpec(), 0)
    with pytest.raises(ValueError, match="global_rank"):
        create_algorithm("fslora", {"global_rank": 4}).server_init(
            {"a.base": torch.zeros(3, 3)}, CLIENTS, LoRASpec(), 0
        )
