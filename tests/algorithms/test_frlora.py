"""Golden math of FRLoRA: principal init, restart every round, merge of s(B̄Ā − B0A0)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from conftest import TinyMLP
from conftest import TinySetup
from conftest import run_rounds
from ilora.algorithms.base import create_algorithm
from ilora.config import TrainConfig
from ilora.lora.spec import LoRASpec
from ilora.lora.state import base_weights
from ilora.lora.state import load_setup
from ilora.lora.state import template
from ilora.tensors import num_bytes
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0, rank=2)
S2 = SPEC.scale(2)
W0 = np.random.default_rng(0).normal(size=(4, 3))  # (d_out, d_in)
TEMPLATE = {"l.base": torch.tensor(W0, dtype=torch.float32), "head.weight": torch.ones(2, 2)}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _principal(r: int) -> np.ndarray:
    """U_r Σ_r V_rᵀ of the float32 base, from numpy's SVD (sign-free)."""
    U, S, Vt = np.linalg.svd(W0.astype(np.float32).astype(np.float64), full_matrices=False)
    return (U[:, :r] * S[:r]) @ Vt[:r]  # (d_out, r) @ (r, d_in)


def _start(alg, state, client: ClientInfo, rnd: RoundInfo, spec: LoRASpec = SPEC):  # type: ignore[no-untyped-def]
    """What ``client`` installs: its factors and residual, from its download."""
    pay = alg.download(state, client, rnd)
    ctx = ClientContext(client, rnd, pay, spec, TrainConfig(), base={"l.base": TEMPLATE["l.base"]})
    return alg.client_init(ctx, {})[0], pay


def _move(factors: dict[str, torch.Tensor], g: torch.Generator, weight: float) -> Upload:
    """A stand-in for local training: the start moved by noise, a new head."""
    A, B = factors["l.lora_A"], factors["l.lora_B"]
    return Upload(
        {
            "l.lora_A": A + torch.randn(A.shape, generator=g),
            "l.lora_B": B + torch.randn(B.shape, generator=g),
            "head.weight": torch.randn(2, 2, generator=g),
        },
        weight,
    )


def test_start_is_the_principal_svd_and_leaves_the_model_unchanged() -> None:
    alg, client = create_algorithm("frlora"), ClientInfo(0, 2, 10)
    state = alg.server_init(TEMPLATE, [client], SPEC, 0)
    setup, pay = _start(alg, state, client, RoundInfo(1, 0))
    s = SPEC.scale(2)
    B0, A0 = _np(setup.factors["l.lora_B"]), _np(setup.factors["l.lora_A"])
    U, S, Vt = np.linalg.svd(W0.astype(np.float32).astype(np.float64), full_matrices=False)
    root = np.sqrt(S[:2] / s)
    # B0 = U_r (Σ_r/s)^{1/2}, A0 = (Σ_r/s)^{1/2} V_rᵀ up to the sign of each principal pair
    assert np.allclose(np.abs(B0), np.abs(U[:, :2] * root), atol=1e-6)
    assert np.allclose(np.abs(A0), np.abs(root[:, None] * Vt[:2]), atol=1e-6)
    assert np.allclose(s * B0 @ A0, _principal(2), atol=1e-5)
    pivots = B0[np.abs(B0).argmax(axis=0), [0, 1]]
    assert (pivots > 0).all()  # the sign convention: each column's largest entry is positive
    # W_res + s B0 A0 = W: the residual is −s B0 A0 (R = 0 at the start)
    assert np.allclose(_np(setup.residual["l.residual"]), -_principal(2), atol=1e-5)
    assert set(pay.tensors) == {"l.residual", "head.weight"}
    assert num_bytes(pay.tensors) == 4 * (4 * 3 + 2 * 2)  # dense R and the head


def test_the_installed_model_is_the_pretrained_one(tiny_setup: TinySetup) -> None:
    model, plain = tiny_setup.model(), TinyMLP()
    clients = tiny_setup.clients()
    alg = create_algorithm("frlora")
    state = alg.server_init(template(model), clients, tiny_setup.spec, 0)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    for c in clients:  # every rank's principal start gives back W exactly
        pay = alg.download(state, c, RoundInfo(1, 0))
        ctx = ClientContext(
            c, RoundInfo(1, 0), pay, tiny_setup.spec, tiny_setup.train, base_weights(model)
        )
        setup, cstate = alg.client_init(ctx, {})
        assert setup.factors["fc1.lora_A"].shape == (c.rank, 6)
        assert set(cstate) == {f"principal/{m}.lora_{k}" for m in ("fc1", "fc2") for k in "AB"}
        load_setup(model, setup)
        assert torch.allclose(model(x), plain(x), atol=1e-5)


def _one_round(args: dict[str, str], seed: int) -> tuple[Any, dict[int, Upload], np.ndarray]:
    """Return the state after two rank-2 clients (weights 20, 60) moved B0, A0 once.

    Also the uploads and the exact merge ``Σ p_k s B_k A_k − s B0 A0``.
    """
    alg, g = create_algorithm("frlora", args), torch.Generator().manual_seed(seed)
    clients = [ClientInfo(0, 2, 20), ClientInfo(1, 2, 60)]
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    setup, _ = _start(alg, state, clients[0], RoundInfo(1, 0))
    ups = {c.cid: _move(setup.factors, g, float(c.num_examples)) for c in clients}
    exact = sum(
        u.weight / 80 * S2 * _np(u.tensors["l.lora_B"]) @ _np(u.tensors["l.lora_A"])
        for u in ups.values()
    ) - _principal(2)
    return alg.aggregate(state, ups, RoundInfo(1, 0)), ups, exact


def test_merge_is_s_times_product_of_averages_minus_the_start() -> None:
    new, ups, exact = _one_round({}, 1)
    w = [20.0, 60.0]
    A = np.average([_np(ups[c].tensors["l.lora_A"]) for c in (0, 1)], 0, w)
    B = np.average([_np(ups[c].tensors["l.lora_B"]) for c in (0, 1)], 0, w)
    paper = S2 * B @ A - _principal(2)  # s(B̄Ā − B0A0)
    assert np.allclose(_np(new.residual["l.residual"]), paper, atol=1e-5)
    assert np.abs(paper - exact).max() > 1e-2  # the product of averages is not exact
    ref_error = np.linalg.norm(paper - exact) / np.linalg.norm(exact)
    assert new.metrics["agg_error"] == pytest.approx(ref_error, rel=1e-4)
    heads = [_np(ups[c].tensors["head.weight"]) for c in (0, 1)]
    assert np.allclose(_np(new.head["head.weight"]), np.average(heads, 0, w), atol=1e-6)


def test_exact_merge_is_the_average_of_products() -> None:
    new, _, exact = _one_round({"merge": "exact"}, 2)
    assert np.allclose(_np(new.residual["l.residual"]), exact, atol=1e-5)
    assert new.metrics["agg_error"] < 1e-6


def test_clients_restart_from_b0_a0_on_the_merged_model_every_round() -> None:
    alg, g = create_algorithm("frlora"), torch.Generator().manual_seed(3)
    clients = [ClientInfo(0, 2, 10), ClientInfo(1, 2, 30)]
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    first, _ = _start(alg, state, clients[0], RoundInfo(1, 0))
    W = W0.astype(np.float32).astype(np.float64)  # the global model W + R
    for t in (1, 2, 3):
        setup, _ = _start(alg, state, clients[1], RoundInfo(t, 0))
        for k in ("l.lora_A", "l.lora_B"):  # the same principal factors, every round
            assert torch.equal(setup.factors[k], first.factors[k])
        start = _np(setup.residual["l.residual"]) + SPEC.scale(2) * _np(
            setup.factors["l.lora_B"]
        ) @ _np(setup.factors["l.lora_A"])
        assert np.allclose(W0 + start, W, atol=1e-5)  # the client starts from W + R
        ups = {c.cid: _move(setup.factors, g, float(c.num_examples)) for c in clients}
        state = alg.aggregate(state, ups, RoundInfo(t, 0))
        A = np.average([_np(u.tensors["l.lora_A"]) for u in ups.values()], 0, [10, 30])
        B = np.average([_np(u.tensors["l.lora_B"]) for u in ups.values()], 0, [10, 30])
        W = W + SPEC.scale(2) * B @ A - _principal(2)
    assert np.allclose(W0 + _np(alg.export(state).residual["l.residual"]), W, atol=1e-5)


def test_mixed_ranks_start_from_their_leading_components_and_merge_folded_factors() -> None:
    """Rank r_k restarts from U_{r_k} Σ_{r_k} V_{r_k}ᵀ at s(r_k); factors merge in √s coordinates,
    zero-padded; exact merge is Σ p_k (s_k B_k A_k − U_k Σ_k V_kᵀ)."""
    clients = [ClientInfo(0, 1, 30), ClientInfo(1, 2, 10)]
    w, g = [30.0, 10.0], torch.Generator().manual_seed(4)
    for merge in ("factors", "exact"):
        alg = create_algorithm("frlora", {"merge": merge})
        state = alg.server_init(TEMPLATE, clients, SPEC, 0)
        ups, starts = {}, {}
        for c in clients:
            setup, _ = _start(alg, state, c, RoundInfo(1, 0))
            s_k = SPEC.scale(c.rank)
            B0, A0 = _np(setup.factors["l.lora_B"]), _np(setup.factors["l.lora_A"])
            assert B0.shape == (4, c.rank) and A0.shape == (c.rank, 3)
            assert np.allclose(s_k * B0 @ A0, _principal(c.rank), atol=1e-5)
            assert np.allclose(_np(setup.residual["l.residual"]) + s_k * B0 @ A0, 0, atol=1e-5)
            starts[c.cid] = (B0, A0)
            ups[c.cid] = _move(setup.factors, g, w[c.cid])
        new = alg.aggregate(state, ups, RoundInfo(1, 0))
        p = [0.75, 0.25]

        def fold(B: np.ndarray, A: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
            root = np.sqrt(SPEC.scale(r))
            Bp, Ap = np.zeros((4, 2)), np.zeros((2, 3))
            Bp[:, :r], Ap[:r] = root * B, root * A
            return Bp, Ap

        trained = [
            fold(_np(ups[c.cid].tensors["l.lora_B"]), _np(ups[c.cid].tensors["l.lora_A"]), c.rank)
            for c in clients
        ]
        start = [fold(*starts[c.cid], c.rank) for c in clients]
        exact = sum(
            p[i] * (trained[i][0] @ trained[i][1] - start[i][0] @ start[i][1]) for i in (0, 1)
        )
        if merge == "exact":
            ref = exact
        else:
            B_bar, A_bar = (sum(p[i] * trained[i][j] for i in (0, 1)) for j in (0, 1))
            B0_bar, A0_bar = (sum(p[i] * start[i][j] for i in (0, 1)) for j in (0, 1))
            ref = B_bar @ A_bar - B0_bar @ A0_bar  # (4, 2) @ (2, 3)
        assert np.allclose(_np(new.residual["l.residual"]), ref, atol=1e-5)
        ref_error = np.linalg.norm(ref - exact) / np.linalg.norm(exact)
        assert new.metrics["agg_error"] == pytest.approx(ref_error, rel=1e-3, abs=1e-6)


def test_clients_that_did_not_move_leave_the_model_unchanged() -> None:
    clients = [ClientInfo(0, 1, 30), ClientInfo(1, 2, 10)]
    alg = create_algorithm("frlora")
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    ups = {}
    for c in clients:
        setup, _ = _start(alg, state, c, RoundInfo(1, 0))
        ups[c.cid] = Upload(dict(setup.factors) | {"head.weight": torch.ones(2, 2)}, 1.0)
    new = alg.aggregate(state, ups, RoundInfo(1, 0))
    assert np.abs(_np(new.residual["l.residual"])).max() < 1e-5


def test_end_to_end_global_model_is_base_plus_r(tiny_setup: TinySetup) -> None:
    res = run_rounds("frlora", tiny_setup)
    setup = create_algorithm("frlora").export(res.state)
    assert set(setup.factors) == {"classifier.weight", "classifier.bias"}
    model, plain = tiny_setup.model(), TinyMLP()
    load_setup(model, setup)
    with torch.no_grad():
        for m in ("fc1", "fc2"):
            getattr(plain, m).weight += setup.residual[f"{m}.residual"]  # (d_out, d_in)
        plain.classifier.weight.copy_(setup.factors["classifier.weight"])
        plain.classifier.bias.copy_(setup.factors["classifier.bias"])
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(x), plain(x), atol=1e-5)
    assert res.state.rank == 4 and 0 < res.state.metrics["agg_error"] < 1


def test_invalid_merge_is_rejected() -> None:
    with pytest.raises(ValueError, match="merge"):
        create_algorithm("frlora", {"merge": "average"})
    with pytest.raises(ValueError, match="rank 3 exceeds"):
        create_algorithm("frlora").server_init(
            {"l.base": torch.zeros(4, 2)}, [ClientInfo(0, 3, 1)], SPEC, 0
        )
