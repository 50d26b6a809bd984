"""Golden math of FedEx-LoRA: averaged factors plus the exact residual, in nn.Linear layout."""

from __future__ import annotations

import numpy as np
import torch

from conftest import TinyMLP
from conftest import TinySetup
from conftest import run_rounds
from ilora.algorithms.base import create_algorithm
from ilora.lora.spec import LoRASpec
from ilora.lora.state import load_setup
from ilora.tensors import num_bytes
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload
from reference_math import moved_pairs
from reference_math import one_pair_round

SPEC = LoRASpec(alpha=4.0, rank=2)
S = 4.0 / 2
CLIENTS = [ClientInfo(0, 2, 20), ClientInfo(1, 2, 60)]
W0 = np.arange(6.0).reshape(3, 2)  # (d_out, d_in), not square: a transposed R would not fit
TEMPLATE = {"l.base": torch.tensor(W0, dtype=torch.float32), "head.weight": torch.ones(2, 2)}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _product(tensors: dict[str, torch.Tensor], m: str) -> np.ndarray:
    return _np(tensors[f"{m}.lora_B"]) @ _np(tensors[f"{m}.lora_A"])  # (d_out, d_in)


def _train(pay: Payload, g: torch.Generator, weights: list[float]) -> dict[int, Upload]:
    return moved_pairs(pay, g, weights, CLIENTS)


def test_aggregate_averages_factors_and_puts_the_cross_terms_in_the_residual() -> None:
    new, ups, A, B = one_pair_round(create_algorithm("fedex-lora"), TEMPLATE, CLIENTS, SPEC)
    w = [20, 60]
    exact = sum((w[c.cid] / 80) * S * _product(ups[c.cid].tensors, "l") for c in CLIENTS)
    assert np.allclose(_np(new.tensors["l.lora_A"]), A, atol=1e-6)
    assert np.allclose(_np(new.tensors["l.lora_B"]), B, atol=1e-6)
    assert np.allclose(_np(new.tensors["l.residual"]), exact - S * B @ A, atol=1e-5)
    assert np.abs(exact - S * B @ A).max() > 1e-2  # FedIT alone would miss this
    assert new.metrics["agg_error"] < 1e-6
    heads = [_np(ups[c.cid].tensors["head.weight"]) for c in CLIENTS]
    assert np.allclose(_np(new.tensors["head.weight"]), np.average(heads, 0, w), atol=1e-6)


def test_two_rounds_equal_fedavg_of_the_full_weight_updates() -> None:
    """W0 + R + s B̄Ā = W0 + Σ_t Σ_k p_k s (B_k A_k − B̄_{t-1} Ā_{t-1}), the clients' exact mean."""
    alg, g = create_algorithm("fedex-lora"), torch.Generator().manual_seed(4)
    state = alg.server_init(TEMPLATE, CLIENTS, SPEC, 0)
    W, start = W0.copy(), np.zeros((3, 2))  # the standard init has B = 0: s B̄_0 Ā_0 = 0
    for t, w in enumerate([[20.0, 60.0], [50.0, 10.0]], start=1):
        ups = _train(alg.download(state, CLIENTS[1], RoundInfo(t, 0)), g, w)
        state = alg.aggregate(state, ups, RoundInfo(t, 0))
        for c in CLIENTS:
            W += (w[c.cid] / sum(w)) * (S * _product(ups[c.cid].tensors, "l") - start)
        A = np.average([_np(ups[c.cid].tensors["l.lora_A"]) for c in CLIENTS], 0, w)
        B = np.average([_np(ups[c.cid].tensors["l.lora_B"]) for c in CLIENTS], 0, w)
        start = S * B @ A  # where the next round's clients start
        assert state.metrics["agg_error"] < 1e-6
    out = alg.export(state)
    got = W0 + _np(out.residual["l.residual"]) + S * _product(out.factors, "l")
    assert np.allclose(got, W, atol=1e-5)


def test_download_carries_factors_residual_and_head() -> None:
    alg = create_algorithm("fedex-lora")
    state = alg.server_init(TEMPLATE, CLIENTS, SPEC, 0)
    pay = alg.download(state, CLIENTS[0], RoundInfo(1, 0))
    assert set(pay.tensors) == {"l.lora_A", "l.lora_B", "l.residual", "head.weight"}
    assert torch.equal(pay.tensors["l.lora_B"], torch.zeros(3, 2))  # standard init, B = 0
    assert num_bytes(pay.tensors) == 4 * (2 * (3 + 2) + 3 * 2 + 2 * 2)
    setup = alg.export(state)
    assert set(setup.factors) == {"l.lora_A", "l.lora_B", "head.weight"}
    assert set(setup.residual) == {"l.residual"}


def test_global_model_applies_the_residual_in_linear_layout(tiny_setup: TinySetup) -> None:
    """The exported model's fc1 equals a plain nn.Linear with weight W0 + R + s B̄Ā."""
    res = run_rounds("fedex-lora", tiny_setup)
    setup = create_algorithm("fedex-lora").export(res.state)
    model, plain = tiny_setup.model(), TinyMLP()
    load_setup(model, setup)
    r = setup.factors["fc1.lora_A"].shape[0]  # the largest client rank
    s = tiny_setup.spec.scale(r)
    assert r == max(c.rank for c in res.clients)
    assert not torch.equal(setup.residual["fc1.residual"], torch.zeros(8, 6))
    with torch.no_grad():
        for m in ("fc1", "fc2"):
            BA = torch.from_numpy(_product(setup.factors, m)).float()
            getattr(plain, m).weight += setup.residual[f"{m}.residual"] + s * BA  # (d_out, d_in)
        plain.classifier.weight.copy_(setup.factors["classifier.weight"])
        plain.classifier.bias.copy_(setup.factors["classifier.bias"])
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(x), plain(x), atol=1e-5)
    assert res.state.metrics["agg_error"] < 1e-6


def test_mixed_ranks_start_from_the_global_model_and_aggregate_to_the_clients_mean() -> None:
    """Our heterogeneous extension: every client starts at the global model; the new global
    model is the weighted mean of the clients' trained models ``W0 + R_k + s(r_k) B_k A_k``."""
    spec, clients = LoRASpec(alpha=4.0, rank=2), [ClientInfo(0, 1, 30), ClientInfo(1, 2, 10)]
    alg, g = create_algorithm("fedex-lora"), torch.Generator().manual_seed(7)
    state = alg.server_init(TEMPLATE, clients, spec, 0)
    for t in (1, 2):
        rnd = RoundInfo(t, 0)
        glob = alg.export(state)
        W_glob = _np(glob.residual["l.residual"]) + spec.scale(2) * _product(glob.factors, "l")
        ups, models = {}, []
        for c in clients:
            pay = alg.download(state, c, rnd).tensors
            assert pay["l.lora_A"].shape == (c.rank, 2) and pay["l.lora_B"].shape == (3, c.rank)
            start = _np(pay["l.residual"]) + spec.scale(c.rank) * _product(pay, "l")
            assert np.allclose(start, W_glob, atol=1e-5)  # the client's model is the global one
            A = pay["l.lora_A"] + torch.randn(c.rank, 2, generator=g)  # (r_k, d_in)
            B = pay["l.lora_B"] + torch.randn(3, c.rank, generator=g)  # (d_out, r_k)
            ups[c.cid] = Upload({"l.lora_A": A, "l.lora_B": B}, float(c.num_examples))
            models.append(_np(pay["l.residual"]) + spec.scale(c.rank) * _np(B) @ _np(A))
        state = alg.aggregate(state, ups, rnd)
        out = alg.export(state)
        got = _np(out.residual["l.residual"]) + spec.scale(2) * _product(out.factors, "l")
        assert np.allclose(got, np.average(models, 0, [30, 10]), atol=1e-5)
        assert state.metrics["agg_error"] < 1e-6
    pay = alg.download(state, clients[0], RoundInfo(3, 0)).tensors
    assert num_bytes(pay) == 4 * (1 * (3 + 2) + 3 * 2)  # leading component + dense R_k
