"""Golden math of ILoRA / ILoRA-S against references computed independently in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TinyMLP
from conftest import TinySetup
from conftest import tiny_data
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.ilora import ILoRAState
from ilora.engine.local import client_round
from ilora.lora.spec import LoRASpec
from ilora.lora.state import base_weights
from ilora.lora.state import load_setup
from ilora.lora.state import template
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0)


def _ctx(model: torch.nn.Module, rank: int, payload: Payload | None = None) -> ClientContext:
    setup = TinySetup(SPEC, [rank])
    return ClientContext(
        ClientInfo(0, rank, 10),
        RoundInfo(1, 0),
        payload or Payload({}, {"ilora/rank": rank}),
        SPEC,
        setup.train,
        base=base_weights(model),
    )


@pytest.mark.parametrize("init_rms", [1e-4, 0.0])
@pytest.mark.parametrize("rank", [1, 3, 6])
def test_qr_init_preserves_the_model_output(init_rms: float, rank: int) -> None:
    setup = TinySetup(SPEC, [rank])
    plain, model = TinyMLP(), setup.model()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    alg = create_algorithm("ilora", {"init_rms": init_rms})
    local, _ = alg.client_init(_ctx(model, rank), {})
    load_setup(model, local)
    assert torch.allclose(model(x), plain(x), atol=1e-5, rtol=1e-5)
    if init_rms == 0.0:  # raw factors: B = Q[:, :r] has orthonormal columns, A = R[:r]
        B = local.factors["fc1.lora_B"]
        assert torch.allclose(B.T @ B, torch.eye(rank), atol=1e-5)
        q, r = np.linalg.qr(plain.fc1.weight.detach().double().numpy())
        assert np.allclose(np.abs(B.numpy()), np.abs(q[:, :rank]), atol=1e-5)


def test_released_offset_one_changes_the_initial_model() -> None:
    setup = TinySetup(SPEC, [2])
    plain, model = TinyMLP(), setup.model()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    local, _ = create_algorithm("ilora", {"init_rms": 0.0, "init_offset": "one"}).client_init(
        _ctx(model, 2), {}
    )
    load_setup(model, local)
    assert not torch.allclose(model(x), plain(x), atol=1e-3)  # W0 + (alpha/r - 1) B A


def test_qr_init_is_nested_across_ranks() -> None:
    model = TinySetup(SPEC, [2]).model()
    alg = create_algorithm("ilora", {"init_rms": 0.0})
    small, _ = alg.client_init(_ctx(model, 2), {})
    large, _ = alg.client_init(_ctx(model, 5), {})
    assert torch.allclose(
        small.factors["fc2.lora_B"], large.factors["fc2.lora_B"][:, :2], atol=1e-6
    )


def _per_client(**args: object) -> Algorithm:  # type: ignore[type-arg]
    """Return ILoRA with the paper's per-client offsets: the server aggregates the uploads alone."""
    return create_algorithm("ilora", {"offset": "per_client", **args})


def _hand_case() -> tuple[ILoRAState, dict[int, Upload], np.ndarray, list[ClientInfo]]:
    """Two clients, ranks 1 and 2, a 4x3 layer; returns the dense reference Σ p_k s_k B_k A_k."""
    g = torch.Generator().manual_seed(7)
    clients = [ClientInfo(0, 1, 30), ClientInfo(1, 2, 10), ClientInfo(2, 3, 10)]
    W0 = torch.randn(4, 3, generator=g)
    alg = _per_client()
    state = alg.server_init({"l.base": W0}, clients, SPEC, 0)
    uploads, ref = {}, np.zeros((4, 3))
    p = {0: 30 / 40, 1: 10 / 40}
    for cid in (0, 1):
        r = clients[cid].rank
        A, B = torch.randn(r, 3, generator=g), torch.randn(4, r, generator=g)
        uploads[cid] = Upload(
            {"l.lora_A": A, "l.lora_B": B}, weight=float(clients[cid].num_examples)
        )
        ref += p[cid] * (SPEC.alpha / r) * (B.double().numpy() @ A.double().numpy())
    return state, uploads, ref, clients


def test_concatenated_aggregation_equals_the_weighted_sum_of_scaled_products() -> None:
    state, uploads, ref, _ = _hand_case()
    new = _per_client().aggregate(state, uploads, RoundInfo(1, 0))
    got = (new.factors["l.lora_B"] @ new.factors["l.lora_A"]).double().numpy()  # scaling folded in
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5
    assert new.metrics["agg_error"] < 1e-6  # r_max = 3 covers rank(ΔW) <= 3


@pytest.mark.parametrize("redistribute", ["qr", "svd", "qr_literal"])
def test_a_client_of_sufficient_rank_receives_the_aggregate_exactly(redistribute: str) -> None:
    state, uploads, ref, clients = _hand_case()
    alg = _per_client(redistribute=redistribute)
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    pay = alg.download(new, clients[2], RoundInfo(2, 0)).tensors
    got = (SPEC.alpha / 3) * (pay["l.lora_B"] @ pay["l.lora_A"]).double().numpy()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5


def test_svd_redistribution_gives_a_small_client_the_best_rank_r_approximation() -> None:
    state, uploads, ref, clients = _hand_case()
    alg = _per_client(redistribute="svd")
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    pay = alg.download(new, clients[0], RoundInfo(2, 0)).tensors
    got = (SPEC.alpha / 1) * (pay["l.lora_B"] @ pay["l.lora_A"]).double().numpy()
    u, s, vt = np.linalg.svd(ref)
    best = s[0] * np.outer(u[:, 0], vt[0])
    assert np.allclose(got, best, atol=1e-5)
    B = pay["l.lora_B"]
    assert torch.allclose(B.T @ B, torch.eye(1), atol=1e-5)  # orthonormal B, ILoRA's flavour


def test_literal_mode_is_the_dense_qr_leading_columns() -> None:
    state, uploads, ref, clients = _hand_case()
    alg = _per_client(redistribute="qr_literal")
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    q, r = np.linalg.qr(ref)
    pay = alg.download(new, clients[1], RoundInfo(2, 0)).tensors
    got = (SPEC.alpha / 2) * (pay["l.lora_B"] @ pay["l.lora_A"]).double().numpy()
    assert np.allclose(got, q[:, :2] @ r[:2], atol=1e-5)


def test_unfolded_scaling_reproduces_the_released_aggregation() -> None:
    state, uploads, _, clients = _hand_case()
    alg = _per_client(fold_scaling=False)
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    raw = sum(
        (u.weight / 40) * (u.tensors["l.lora_B"] @ u.tensors["l.lora_A"]) for u in uploads.values()
    )
    assert torch.allclose(new.factors["l.lora_B"] @ new.factors["l.lora_A"], raw, atol=1e-5)


def test_control_variates_follow_scaffold_option_one_with_sgd() -> None:
    """K SGD steps on full batches: y <- y - lr (grad f(y) + c_hat - c_k); c_k+ = grad f(x)."""
    spec, rank = SPEC, 2
    train = TinySetup(spec, [rank]).train.__class__(
        steps=4, batch_size=64, optimizer="sgd", lr=0.1, head_lr=0.1
    )
    alg = create_algorithm("ilora-s", {"init_rms": 0.0})
    model = TinySetup(spec, [rank]).model()
    client = ClientInfo(0, rank, 40)
    data = tiny_data(40, 5)
    state = alg.server_init(template(model), [client, ClientInfo(1, 3, 10)], spec, 0)
    g = torch.Generator().manual_seed(3)
    c_server = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in state.control.items()}
    state = ILoRAState(state.factors, state.head, c_server, state.init, spec, state.rank, 2)
    payload = alg.download(state, client, RoundInfo(1, 0))
    c_hat = {k[3:]: v for k, v in payload.tensors.items() if k.startswith("cv/")}
    c_k = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in c_hat.items()}
    cstate = {f"cv/{k}": v for k, v in c_k.items()}

    # independent reference: plain autograd on the same model and start point
    ref_model = TinySetup(spec, [rank]).model()
    setup, _ = alg.client_init(_ctx(ref_model, rank, payload), {})
    params = load_setup(ref_model, setup)
    ref_model.eval()
    loss = torch.nn.functional.cross_entropy(ref_model(data.inputs["x"]), data.labels)
    start = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    ref_model.train()
    for _ in range(train.steps):
        loss = torch.nn.functional.cross_entropy(ref_model(data.inputs["x"]), data.labels)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for (k, p), gk in zip(params.items(), grads, strict=True):
                p -= train.lr * (gk + c_hat[k] - c_k[k])

    up, new_cstate = client_round(
        alg, model, data, payload, cstate, client, RoundInfo(1, 0), spec, train
    )
    for k, p in params.items():
        assert torch.allclose(up.tensors[k], p.detach(), atol=1e-5), k
        assert torch.allclose(up.tensors[f"cv/{k}"], start[k] - c_k[k], atol=1e-5), k
        assert torch.allclose(new_cstate[f"cv/{k}"], start[k], atol=1e-6), k

    # server: c <- c + (1/N) sum pad(dc_k), N = 2 clients in the federation
    new = alg.aggregate(state, {0: up}, RoundInfo(1, 0))
    dA = up.tensors["cv/fc1.lora_A"]
    assert torch.allclose(
        new.control["fc1.lora_A"][:rank], c_server["fc1.lora_A"][:rank] + dA / 2, atol=1e-6
    )
    assert torch.equal(new.control["fc1.lora_A"][rank:], c_server["fc1.lora_A"][rank:])


@pytest.mark.parametrize("redistribute", ["qr", "svd", "qr_literal"])
def test_agg_error_is_the_relative_truncation_error(redistribute: str) -> None:
    state, uploads, ref, clients = _hand_case()
    alg = _per_client(redistribute=redistribute)
    small = alg.server_init({"l.base": torch.zeros(4, 3)}, clients[:2], SPEC, 0)  # r_max = 2
    new = alg.aggregate(small, uploads, RoundInfo(1, 0))
    applied = (new.factors["l.lora_B"] @ new.factors["l.lora_A"]).double().numpy()
    expected = np.linalg.norm(ref - applied) / np.linalg.norm(ref)
    assert expected > 1e-3  # rank(ΔW) = 3 > 2: something is truncated
    assert new.metrics["agg_error"] == pytest.approx(expected, rel=1e-5)
    if redistribute == "svd":  # Eckart–Young: the tail of the singular values
        s = np.linalg.svd(ref, compute_uv=False)
        assert expected == pytest.approx(np.sqrt((s[2:] ** 2).sum() / (s**2).sum()), rel=1e-5)


def _global_case() -> tuple[ILoRAState, dict[int, Upload], np.ndarray, list[ClientInfo]]:
    """A trained global adapter at r_max = 4 on a 6x4 layer, uploads of ranks 1 and 2.

    Returns the dense reference of the shared-offset update ``P + Σ p_k (s_k B_k A_k − P_{r_k})``.
    """
    g = torch.Generator().manual_seed(11)
    clients = [ClientInfo(0, 1, 30), ClientInfo(1, 2, 10), ClientInfo(2, 4, 10)]
    alg = create_algorithm("ilora")
    state = alg.server_init({"l.base": torch.randn(6, 4, generator=g)}, clients, SPEC, 0)
    B_g, A_g = torch.randn(6, 4, generator=g), torch.randn(4, 4, generator=g)  # A_g: s folded
    state = ILoRAState({"l.lora_B": B_g, "l.lora_A": A_g}, *list(vars(state).values())[1:])
    P = B_g.double().numpy() @ A_g.double().numpy()
    ref, uploads = P.copy(), {}
    for cid, p in ((0, 0.75), (1, 0.25)):
        r = clients[cid].rank
        A, B = torch.randn(r, 4, generator=g), torch.randn(6, r, generator=g)
        uploads[cid] = Upload({"l.lora_A": A, "l.lora_B": B}, float(clients[cid].num_examples))
        start = B_g[:, :r].double().numpy() @ A_g[:r].double().numpy()
        ref += p * ((SPEC.alpha / r) * (B.double().numpy() @ A.double().numpy()) - start)
    return state, uploads, ref, clients


@pytest.mark.parametrize("redistribute", ["qr", "svd", "qr_literal"])
def test_shared_offset_adds_each_clients_change_relative_to_its_start(redistribute: str) -> None:
    state, uploads, ref, _ = _global_case()
    new = create_algorithm("ilora", {"redistribute": redistribute}).aggregate(
        state, uploads, RoundInfo(2, 0)
    )
    got = (new.factors["l.lora_B"] @ new.factors["l.lora_A"]).double().numpy()
    # r_max = 4 = d_in: nothing is truncated
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-6
    unchanged = {c: Upload(  # every client uploads its start: the global adapter stays
        {"l.lora_A": state.factors["l.lora_A"][: u.tensors["l.lora_A"].shape[0]] * (
            u.tensors["l.lora_A"].shape[0] / SPEC.alpha), "l.lora_B":
            state.factors["l.lora_B"][:, : u.tensors["l.lora_A"].shape[0]]}, u.weight)
        for c, u in uploads.items()}  # fmt: skip
    same = create_algorithm("ilora").aggregate(state, unchanged, RoundInfo(2, 0))
    before = state.factors["l.lora_B"] @ state.factors["l.lora_A"]
    assert torch.allclose(same.factors["l.lora_B"] @ same.factors["l.lora_A"], before, atol=1e-5)


def test_default_redistribution_is_the_papers_leading_column_qr() -> None:
    state, uploads, ref, clients = _hand_case()
    small = _per_client().server_init({"l.base": torch.zeros(4, 3)}, clients[:2], SPEC, 0)
    new = _per_client().aggregate(small, uploads, RoundInfo(1, 0))  # r_max = 2 < rank(ΔW) = 3
    q, r = np.linalg.qr(ref)
    for client in clients[:2]:
        pay = _per_client().download(new, client, RoundInfo(2, 0)).tensors
        k = client.rank
        got = (SPEC.alpha / k) * (pay["l.lora_B"] @ pay["l.lora_A"]).double().numpy()
        assert np.linalg.norm(got - q[:, :k] @ r[:k]) / np.linalg.norm(q[:, :k] @ r[:k]) < 1e-6
        B = pay["l.lora_B"]
        assert torch.allclose(B.T @ B, torch.eye(k), atol=1e-5)  # the paper's split: B = Q


def test_balanced_split_sends_the_same_product_with_balanced_factors() -> None:
    state, uploads, _, clients = _global_case()
    paper, balanced = create_algorithm("ilora"), create_algorithm("ilora", {"split": "balanced"})
    new = paper.aggregate(state, uploads, RoundInfo(2, 0))
    for client in clients:
        a = paper.download(new, client, RoundInfo(3, 0)).tensors
        b = balanced.download(new, client, RoundInfo(3, 0)).tensors
        product_a, product_b = a["l.lora_B"] @ a["l.lora_A"], b["l.lora_B"] @ b["l.lora_A"]
        assert torch.allclose(product_a, product_b, atol=1e-5)
        col, row = b["l.lora_B"].norm(dim=0), b["l.lora_A"].norm(dim=1) * SPEC.scale(client.rank)
        assert torch.allclose(col, row, rtol=1e-4)  # ‖B_i‖ = ‖s A_i‖ = √σ_i


def _byzantine_case() -> tuple[ILoRAState, dict[int, Upload], np.ndarray]:
    """Four honest clients near one product and one sending -10 times it (rank 2, 6x5 layer).

    Returns the state, the uploads and the honest clients' dense products ``s B_k A_k``.
    """
    g = torch.Generator().manual_seed(3)
    clients = [ClientInfo(c, 2, 10) for c in range(5)]
    alg = create_algorithm("ilora")
    state = alg.server_init({"l.base": torch.randn(6, 5, generator=g)}, clients, SPEC, 0)
    B0, A0 = torch.randn(6, 2, generator=g), torch.randn(2, 5, generator=g)
    uploads, honest = {}, []
    for cid in range(5):
        B = B0 + 0.01 * torch.randn(6, 2, generator=g)
        A = A0 + 0.01 * torch.randn(2, 5, generator=g)
        if cid == 4:
            B = -10 * B0  # Byzantine: its product is -10 times the honest one
        else:
            honest.append((SPEC.alpha / 2) * (B.double() @ A.double()).numpy())
        head = {"head.weight": torch.full((2, 2), 100.0 if cid == 4 else 1.0 + cid)}
        uploads[cid] = Upload({"l.lora_A": A, "l.lora_B": B, **head}, weight=10.0)
    return state, uploads, np.stack(honest)


def test_median_of_products_resists_a_byzantine_client_that_the_mean_follows() -> None:
    """The attack: one client of five uploads a product of -10 times the honest ones."""
    state, uploads, honest = _byzantine_case()
    byzantine = (SPEC.alpha / 2) * (
        uploads[4].tensors["l.lora_B"].double() @ uploads[4].tensors["l.lora_A"].double()
    ).numpy()
    dense = np.concatenate([honest, byzantine[None]])
    median = np.median(dense, axis=0)  # 5 values: the middle one, as torch's median
    U, S, Vt = np.linalg.svd(median)
    want = (U[:, :2] * S[:2]) @ Vt[:2]  # best rank-2 factors (r_max = 2)
    robust = create_algorithm("ilora", {"robust_products": "median", "redistribute": "svd"})
    new = robust.aggregate(state, uploads, RoundInfo(1, 0))
    got = (new.factors["l.lora_B"] @ new.factors["l.lora_A"]).double().numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    truth = honest.mean(axis=0)
    assert np.linalg.norm(got - truth) / np.linalg.norm(truth) < 0.05
    plain = create_algorithm("ilora").aggregate(state, uploads, RoundInfo(1, 0))
    mean = (plain.factors["l.lora_B"] @ plain.factors["l.lora_A"]).double().numpy()
    assert np.linalg.norm(mean - truth) / np.linalg.norm(truth) > 1.0  # the mean follows it
    assert torch.equal(new.head["head.weight"], torch.full((2, 2), 3.0))  # median of 1,2,3,4,100
