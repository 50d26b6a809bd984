"""Golden math of FedLEASE: B-distance clustering, expert init, per-cluster means, routing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinySetup
from conftest import assert_rejected
from conftest import run_rounds
from conftest import tiny_data
from ilora import config
from ilora.algorithms._clustering import average_linkage
from ilora.algorithms._clustering import b_distances
from ilora.algorithms._clustering import choose_clusters
from ilora.algorithms._clustering import silhouette
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.fedlease import FedLEASE
from ilora.algorithms.fedlease import FedLEASEState
from ilora.algorithms.traffic import Contact
from ilora.algorithms.traffic import formula_of
from ilora.algorithms.traffic import shapes_of
from ilora.engine.local import client_round
from ilora.engine.local import make_context
from ilora.engine.sampling import sample_clients
from ilora.engine.setup import build
from ilora.engine.simulation import canonical_payload
from ilora.engine.simulation import run
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.lora.state import adapted
from ilora.lora.state import load_setup
from ilora.lora.state import template
from ilora.tensors import all_finite
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload
from reference_math import top_m_gate

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
SPEC = LoRASpec(alpha=4.0)
D_OUT, D_IN, RANK = 3, 4, 2

# ---- independent numpy references (written from the paper's definitions)


def ref_distances(Bs: list[list[np.ndarray]]) -> np.ndarray:
    n = len(Bs)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                terms = []
                for bi, bj in zip(Bs[i], Bs[j], strict=True):
                    u, v = bi.ravel(), bj.ravel()
                    cos = u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-8)
                    terms.append(1.0 - cos)
                D[i, j] = np.mean(terms)
    return D


def ref_upgma(D: np.ndarray, k: int) -> set[frozenset[int]]:
    """Average linkage via Lance-Williams: d(a∪b, c) = (|a| d(a, c) + |b| d(b, c)) / (|a| + |b|)."""
    clusters = {i: [i] for i in range(len(D))}
    d = {frozenset((i, j)): D[i, j] for i in range(len(D)) for j in range(i + 1, len(D))}
    new = len(D)
    while len(clusters) > k:
        pair = min(d, key=lambda p: d[p])
        a, b = sorted(pair)
        ca, cb = clusters.pop(a), clusters.pop(b)
        del d[pair]
        for c in clusters:
            dac, dbc = d.pop(frozenset((a, c))), d.pop(frozenset((b, c)))
            d[frozenset((new, c))] = (len(ca) * dac + len(cb) * dbc) / (len(ca) + len(cb))
        clusters[new] = ca + cb
        new += 1
    return {frozenset(v) for v in clusters.values()}


def ref_silhouette(D: np.ndarray, labels: list[int]) -> float:
    lab = np.asarray(labels)
    n = len(lab)
    s = np.zeros(n)
    for i in range(n):
        same = lab == lab[i]
        if same.sum() == 1:
            continue
        a = D[i, same].sum() / (same.sum() - 1)
        b = min(D[i, lab == c].mean() for c in np.unique(lab) if c != lab[i])
        s[i] = (b - a) / max(a, b)
    return float(s.mean())


def partition(labels: list[int]) -> set[frozenset[int]]:
    return {frozenset(i for i, x in enumerate(labels) if x == c) for c in set(labels)}


def ref_expert_gates_and_output(
    x: np.ndarray, EA: np.ndarray, EB: np.ndarray, G: np.ndarray, own: int, s: float
) -> tuple[np.ndarray, list[set[int]]]:
    """Per token: softmax(G x), top-M of 2M−1 renormalised, outputs >= M -> own expert."""
    M = EA.shape[0]
    out, chosen = [], []
    for t in x:
        kept, w = top_m_gate(G @ t, M)
        experts = [j if j < M else own for j in kept]
        out.append(sum(s * wj * EB[e] @ (EA[e] @ t) for wj, e in zip(w, experts, strict=True)))
        chosen.append(set(experts))
    return np.stack(out), chosen


# ---- clustering


def test_distance_matrix_is_the_mean_over_layers_of_one_minus_cosine_of_b() -> None:
    rng = np.random.default_rng(0)
    Bs = [[rng.normal(size=(3, 2)), rng.normal(size=(5, 2))] for _ in range(4)]
    Bs.append([np.zeros((3, 2)), rng.normal(size=(5, 2))])  # a zero B is at distance 1
    D = b_distances([[torch.from_numpy(b) for b in layers] for layers in Bs])
    assert np.allclose(D, ref_distances(Bs), atol=1e-12)
    assert np.allclose(D, D.T) and np.all(np.diag(D) == 0)


def _planted_bs(labels: list[int], noise: float, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = [[rng.normal(size=(4, 2)), rng.normal(size=(6, 2))] for _ in range(max(labels) + 1)]
    return [[c + noise * rng.normal(size=c.shape) for c in centres[k]] for k in labels]


def test_average_linkage_and_silhouette_recover_planted_clusters() -> None:
    planted = [2, 0, 1, 0, 2, 1, 1, 0, 2]
    Bs = _planted_bs(planted, noise=0.3, seed=1)
    D = b_distances([[torch.from_numpy(b) for b in layers] for layers in Bs])
    for k in (2, 3, 4):
        labels = average_linkage(D, k)
        assert partition(labels) == ref_upgma(D, k)
        assert silhouette(D, labels) == pytest.approx(ref_silhouette(D, labels), abs=1e-12)
    best = choose_clusters(D, max_experts=4)
    assert partition(best) == partition(planted)
    firsts = [best.index(k) for k in range(max(best) + 1)]
    assert firsts == sorted(firsts)  # clusters numbered by their smallest member


def test_linkage_is_average_not_single_or_complete() -> None:
    """On these 1-D points the three linkages give three different 3-cluster partitions."""
    x = np.array([2.8, 7.3, 5.7, 9.0, 4.5, 4.1])
    D = np.abs(x[:, None] - x[None, :])
    labels = average_linkage(D, 3)
    assert (
        partition(labels)
        == ref_upgma(D, 3)
        == {
            frozenset({0}),
            frozenset({1, 3}),
            frozenset({2, 4, 5}),
        }
    )
    assert labels == [0, 1, 2, 1, 2, 2]  # numbered by smallest member


def test_silhouette_by_hand_and_the_choice_of_m() -> None:
    D = np.array([[0.0, 1.0, 4.0], [1.0, 0.0, 3.0], [4.0, 3.0, 0.0]])
    # point 0: a = 1, b = 4 -> 0.75; point 1: a = 1, b = 3 -> 2/3; point 2 (singleton): 0
    assert silhouette(D, [0, 0, 1]) == pytest.approx((0.75 + 2 / 3) / 3)
    assert choose_clusters(D, max_experts=4) == [0, 0, 1]  # M <= n - 1 = 2
    assert choose_clusters(D[:2, :2], max_experts=4) == [0, 1]  # n <= 2: one expert each


# ---- server: allocation, per-cluster averaging, late joiners, export

CLIENTS = [ClientInfo(i, RANK, 10 * (i + 1)) for i in range(5)]
PLANTED = [0, 1, 0, 1, 1]
TEMPLATE = {"l.base": torch.zeros(D_OUT, D_IN), "head.weight": torch.ones(2, D_IN)}


def _warm_uploads(seed: int = 0) -> dict[int, Upload]:
    g = torch.Generator().manual_seed(seed)
    centres = [torch.randn(D_OUT, RANK, generator=g) for _ in range(2)]
    ups = {}
    for c, k in zip(CLIENTS, PLANTED, strict=True):
        A = torch.randn(RANK, D_IN, generator=g)
        B = centres[k] + 0.1 * torch.randn(D_OUT, RANK, generator=g)
        ups[c.cid] = Upload({"l.lora_A": A, "l.lora_B": B}, float(c.num_examples))
    return ups


def _allocated(warmup: int = 1) -> tuple[FedLEASE, FedLEASEState, dict[int, Upload]]:
    alg = create_algorithm("fedlease", {"warmup_rounds": warmup})
    assert isinstance(alg, FedLEASE)
    state = alg.server_init(TEMPLATE, CLIENTS, SPEC, 0)
    ups = _warm_uploads()
    return alg, alg.aggregate(state, ups, RoundInfo(warmup, 0)), ups


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def test_allocation_clusters_by_b_and_initialises_experts_as_cluster_means() -> None:
    _, state, ups = _allocated()
    assert state.cluster_of == dict(enumerate(PLANTED))
    assert state.num_experts == 2
    EA, EB = _np(state.experts["l.experts_A"]), _np(state.experts["l.experts_B"])
    assert EA.shape == (2, RANK, D_IN) and EB.shape == (2, D_OUT, RANK)
    for m in range(2):
        members = [c for c, k in enumerate(PLANTED) if k == m]
        w = [ups[c].weight for c in members]
        for bank, kind in ((EA, "l.lora_A"), (EB, "l.lora_B")):
            ref = np.average([_np(ups[c].tensors[kind]) for c in members], axis=0, weights=w)
            assert np.allclose(bank[m], ref, atol=1e-6)
        router = state.routers[f"{m}/l.router"]
        assert router.shape == (3, D_IN) and router.abs().max() <= 1 / np.sqrt(D_IN)


def test_no_aggregation_and_no_clustering_during_warmup() -> None:
    alg = create_algorithm("fedlease", {"warmup_rounds": 2})
    state = alg.server_init(TEMPLATE, CLIENTS, SPEC, 0)
    first = alg.download(state, CLIENTS[0], RoundInfo(1, 0))
    assert set(first.tensors) == {"local/l.lora_A", "local/l.lora_B", "local/head.weight"}
    assert torch.equal(first.tensors["local/l.lora_B"], torch.zeros(D_OUT, RANK))
    ups = _warm_uploads()
    after = alg.aggregate(state, {0: ups[0], 1: ups[1]}, RoundInfo(1, 0))
    assert not after.cluster_of and not after.experts and not after.routers
    assert alg.download(after, CLIENTS[0], RoundInfo(2, 0)).tensors == {}  # keeps its own LoRA
    assert "local/l.lora_A" in alg.download(after, CLIENTS[2], RoundInfo(2, 0)).tensors
    assert torch.equal(after.warm["1/l.lora_B"], ups[1].tensors["l.lora_B"])
    assert alg.round_metrics(after) == {}


def test_selection_download_carries_all_experts_and_the_cluster_router() -> None:
    alg, state, _ = _allocated()
    p = alg.download(state, CLIENTS[3], RoundInfo(2, 0))
    assert p.config == {"cluster": 1}
    assert set(p.tensors) == {"l.experts_A", "l.experts_B", "l.router"}
    assert torch.equal(p.tensors["l.router"], state.routers["1/l.router"])
    assert torch.equal(p.tensors["l.experts_B"], state.experts["l.experts_B"])


def test_server_averages_each_expert_and_router_over_its_cluster() -> None:
    alg, state, _ = _allocated()
    g = torch.Generator().manual_seed(9)
    ups = {
        c: Upload(
            {
                "l.lora_A": torch.randn(RANK, D_IN, generator=g),
                "l.lora_B": torch.randn(D_OUT, RANK, generator=g),
                "l.router": torch.randn(3, D_IN, generator=g),
            },
            float(CLIENTS[c].num_examples),
        )
        for c in (1, 4)  # two clients of cluster 1; nobody of cluster 0
    }
    new = alg.aggregate(state, ups, RoundInfo(2, 0))
    w = [20.0, 50.0]
    mean = {
        k: np.average([_np(ups[c].tensors[k]) for c in (1, 4)], axis=0, weights=w)
        for k in ("l.lora_A", "l.lora_B", "l.router")
    }
    assert np.allclose(_np(new.experts["l.experts_A"][1]), mean["l.lora_A"], atol=1e-6)
    assert np.allclose(_np(new.experts["l.experts_B"][1]), mean["l.lora_B"], atol=1e-6)
    assert np.allclose(_np(new.routers["1/l.router"]), mean["l.router"], atol=1e-6)
    assert torch.equal(new.experts["l.experts_A"][0], state.experts["l.experts_A"][0])
    assert torch.equal(new.routers["0/l.router"], state.routers["0/l.router"])
    s = SPEC.scale(RANK)
    ideal = sum(
        (wk / 70) * s * _np(ups[c].tensors["l.lora_B"]) @ _np(ups[c].tensors["l.lora_A"])
        for wk, c in zip(w, (1, 4), strict=True)
    )
    applied = s * mean["l.lora_B"] @ mean["l.lora_A"]
    err = np.linalg.norm(ideal - applied) / np.linalg.norm(ideal)
    assert alg.round_metrics(new)["agg_error"] == pytest.approx(err, rel=1e-5)


def test_a_late_joiner_trains_one_warmup_round_and_joins_the_nearest_cluster() -> None:
    alg, state, warm = _allocated()
    late = ClientInfo(5, RANK, 30)
    assert "local/l.lora_A" in alg.download(state, late, RoundInfo(2, 0)).tensors
    B = warm[1].tensors["l.lora_B"] + 0.05  # close to cluster 1
    up = Upload({"l.lora_A": torch.ones(RANK, D_IN), "l.lora_B": B}, 30.0)
    new = alg.aggregate(state, {5: up}, RoundInfo(2, 0))
    assert new.cluster_of[5] == 1
    assert torch.equal(new.experts["l.experts_A"], state.experts["l.experts_A"])
    assert alg.download(new, late, RoundInfo(3, 0)).config == {"cluster": 1}


def test_export_is_pretrained_then_the_uniform_mean_of_the_experts() -> None:
    alg = create_algorithm("fedlease")
    state = alg.server_init(TEMPLATE, CLIENTS, SPEC, 0)
    before = alg.export(state)
    assert not before.residual and torch.equal(before.factors["l.lora_B"], torch.zeros(3, 2))
    alg, state, _ = _allocated()
    out = alg.export(state)
    EA, EB = _np(state.experts["l.experts_A"]), _np(state.experts["l.experts_B"])
    ref = SPEC.scale(RANK) * (EB[0] @ EA[0] + EB[1] @ EA[1]) / 2
    assert np.allclose(_np(out.residual["l.residual"]), ref, atol=1e-6)
    assert set(out.factors) == {"head.weight"}


# ---- clients on the tiny MLP: routing, what trains, what travels


def _drive(
    alg: FedLEASE, setup: TinySetup, rounds: int, seed: int = 0
) -> tuple[object, list[dict[int, Payload]], list[dict[int, Upload]], dict[int, TensorDict]]:
    res = run_rounds(alg, setup, seed=seed, rounds=rounds)
    return res.state, res.payloads, res.uploads, res.cstates


def _tiny() -> TinySetup:
    return TinySetup(SPEC, [2, 2, 2, 2])


def _selection_client(
    alg: FedLEASE,
    state: FedLEASEState,
    cid: int,
    store: dict[int, TensorDict],
    setup: TinySetup | None = None,
) -> tuple[object, object, object]:
    setup = setup or _tiny()
    model, client = setup.model(), setup.clients()[cid]
    payload = canonical_payload(alg.download(state, client, RoundInfo(2, 0)))
    ctx = make_context(model, payload, client, RoundInfo(2, 0), setup.spec, setup.train)
    return model, payload, alg.client_init(ctx, store[cid])[0]


def test_the_client_model_routes_as_the_reference() -> None:
    alg = create_algorithm("fedlease", {"warmup_rounds": 1})
    assert isinstance(alg, FedLEASE)
    state, _, _, store = _drive(alg, _tiny(), rounds=1)
    assert isinstance(state, FedLEASEState) and state.num_experts >= 2
    for cid in range(4):
        model, payload, setup = _selection_client(alg, state, cid, store)
        load_setup(model, setup)  # type: ignore[arg-type]
        own = payload.config["cluster"]  # type: ignore[attr-defined]
        t = payload.tensors  # type: ignore[attr-defined]
        x = torch.randn(40, 6, generator=torch.Generator().manual_seed(cid))
        fc1 = adapted(model)["fc1"]
        got = (fc1(x) - fc1.base(x)).detach().double().numpy()
        ref, chosen = ref_expert_gates_and_output(
            x.double().numpy(),
            _np(t["fc1.experts_A"]),
            _np(t["fc1.experts_B"]),
            _np(t["fc1.router"]),
            int(own),
            SPEC.scale(2),
        )
        assert np.allclose(got, ref, atol=1e-5)
        assert all(own in c for c in chosen)


def test_only_the_own_expert_and_the_router_train() -> None:
    alg = create_algorithm("fedlease", {"warmup_rounds": 1})
    assert isinstance(alg, FedLEASE)
    state, _, _, store = _drive(alg, _tiny(), rounds=1)
    assert isinstance(state, FedLEASEState)
    setup = _tiny()
    model, client = setup.model(), setup.clients()[2]
    payload = canonical_payload(alg.download(state, client, RoundInfo(2, 0)))
    own = int(payload.config["cluster"])
    others = [m for m in range(state.num_experts) if m != own]
    up, cstate = client_round(
        alg, model, tiny_data(32, 2), payload, store[2], client, RoundInfo(2, 0), SPEC, setup.train
    )
    assert set(up.tensors) == {f"fc{i}.{k}" for i in (1, 2) for k in ("lora_A", "lora_B", "router")}
    assert set(cstate) == {"local/classifier.weight", "local/classifier.bias"}
    for name, layer in adapted(model).items():
        t = payload.tensors
        assert torch.equal(layer.experts_A, t[f"{name}.experts_A"][others])  # type: ignore[arg-type]
        assert torch.equal(layer.experts_B, t[f"{name}.experts_B"][others])  # type: ignore[arg-type]
        assert not torch.equal(up.tensors[f"{name}.lora_B"], t[f"{name}.experts_B"][own])
        assert not torch.equal(up.tensors[f"{name}.router"], t[f"{name}.router"])
    assert not torch.equal(cstate["local/classifier.weight"], store[2]["local/classifier.weight"])


def test_warmup_clients_continue_their_own_lora_and_keep_it() -> None:
    alg = create_algorithm("fedlease")  # 5 warm-up rounds
    assert isinstance(alg, FedLEASE)
    state, pays, ups, store = _drive(alg, _tiny(), rounds=2)
    assert isinstance(state, FedLEASEState) and not state.experts
    assert all(p.tensors == {} for p in pays[1].values())  # type: ignore[attr-defined]
    for cid, up in ups[1].items():
        assert set(up.tensors) == {"fc1.lora_A", "fc1.lora_B", "fc2.lora_A", "fc2.lora_B"}
        for k, v in up.tensors.items():
            assert torch.equal(store[cid][f"local/{k}"], v)
            assert torch.equal(state.warm[f"{cid}/{k}"], v)
    assert not torch.equal(ups[1][0].tensors["fc1.lora_B"], ups[1][1].tensors["fc1.lora_B"])


@pytest.mark.parametrize("ranks", [[2, 2, 2, 2], [2, 4, 2, 4]])
def test_selection_rounds_are_finite_and_bitwise_reproducible(ranks: list[int]) -> None:
    alg = create_algorithm("fedlease", {"warmup_rounds": 1})
    assert isinstance(alg, FedLEASE)
    a, _, ups, _ = _drive(alg, TinySetup(SPEC, ranks), rounds=3, seed=3)
    b, _, _, _ = _drive(alg, TinySetup(SPEC, ranks), rounds=3, seed=3)
    assert isinstance(a, FedLEASEState) and isinstance(b, FedLEASEState)
    assert a.cluster_of == b.cluster_of
    for field in ("experts", "routers", "warm"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert all(all_finite(u.tensors) for u in ups[-1].values())
    assert all_finite(alg.export(a).residual)


# ---- heterogeneous ranks (our extension): experts at r_max in expert units, clients at r_k

R_MAX, D_OUT_H, D_IN_H = 5, 6, 7
MIXED = [ClientInfo(i, r, 10 * (i + 1)) for i, r in enumerate([2, 4, 2, 4, 4, 5])]
MIXED_PLANTED = [0, 1, 1, 0, 1]  # client 5 (rank 5) never uploads in warm-up: it only sets R
TEMPLATE_H = {"l.base": torch.zeros(D_OUT_H, D_IN_H), "head.weight": torch.ones(2, D_IN_H)}


def s_of(r: int) -> float:
    return 4.0 / r  # alpha / r with SPEC's alpha = 4


def ref_componentwise(
    old_A: np.ndarray, old_B: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Component i = weighted mean over the parts of rank > i of (s_k/s_R) A_k[i], B_k[:, i]."""
    R = old_A.shape[0]
    A, B = old_A.copy(), old_B.copy()
    for i in range(R):
        owners = [(a, b, w) for a, b, w in parts if a.shape[0] > i]
        if not owners:
            continue  # nobody owns component i: it keeps its value
        total = sum(w for _, _, w in owners)
        A[i] = sum(w * s_of(a.shape[0]) / s_of(R) * a[i] for a, _, w in owners) / total
        B[:, i] = sum(w * b[:, i] for _, b, w in owners) / total
    return A, B


def _mixed_warm_uploads(seed: int = 0) -> dict[int, Upload]:
    g = torch.Generator().manual_seed(seed)
    centres = [torch.randn(D_OUT_H, 4, generator=g) for _ in range(2)]
    ups = {}
    for c, k in zip(MIXED[:5], MIXED_PLANTED, strict=True):
        A = torch.randn(c.rank, D_IN_H, generator=g)
        B = centres[k][:, : c.rank] + 0.1 * torch.randn(D_OUT_H, c.rank, generator=g)
        ups[c.cid] = Upload({"l.lora_A": A, "l.lora_B": B}, float(c.num_examples))
    return ups


def _mixed_allocated() -> tuple[FedLEASE, FedLEASEState, FedLEASEState, dict[int, Upload]]:
    alg = create_algorithm("fedlease", {"warmup_rounds": 1})
    assert isinstance(alg, FedLEASE)
    start = alg.server_init(TEMPLATE_H, MIXED, SPEC, 0)
    ups = _mixed_warm_uploads()
    return alg, start, alg.aggregate(start, ups, RoundInfo(1, 0)), ups


def _parts(ups: dict[int, Upload], cids: list[int]) -> list[tuple[np.ndarray, np.ndarray, float]]:
    return [
        (_np(ups[c].tensors["l.lora_A"]), _np(ups[c].tensors["l.lora_B"]), ups[c].weight)
        for c in cids
    ]


def test_mixed_ranks_cluster_on_padded_b_and_init_experts_per_component() -> None:
    alg, start, state, ups = _mixed_allocated()
    assert start.rank == R_MAX
    first = alg.download(start, MIXED[0], RoundInfo(1, 0)).tensors  # the initial LoRA at r_k = 2
    assert torch.equal(first["local/l.lora_A"], start.init["l.lora_A"][:2])
    assert first["local/l.lora_B"].shape == (D_OUT_H, 2)
    padded = [
        [np.pad(_np(ups[c].tensors["l.lora_B"]), ((0, 0), (0, R_MAX - MIXED[c].rank)))]
        for c in sorted(ups)
    ]
    D = b_distances([[torch.from_numpy(b) for b in layers] for layers in padded])
    assert np.allclose(D, ref_distances(padded), atol=1e-12)
    assert state.cluster_of == dict(enumerate(MIXED_PLANTED))
    EA, EB = _np(state.experts["l.experts_A"]), _np(state.experts["l.experts_B"])
    assert EA.shape == (2, R_MAX, D_IN_H) and EB.shape == (2, D_OUT_H, R_MAX)
    A0, B0 = _np(start.init["l.lora_A"]), np.zeros((D_OUT_H, R_MAX))
    for m in range(2):
        members = [c for c, k in enumerate(MIXED_PLANTED) if k == m]
        ref_A, ref_B = ref_componentwise(A0, B0, _parts(ups, members))
        assert np.allclose(EA[m], ref_A, atol=1e-6) and np.allclose(EB[m], ref_B, atol=1e-6)
    assert np.array_equal(EA[:, 4], A0[[4, 4]]) and not EB[:, :, 4].any()  # nobody owns it


def test_mixed_rank_uploads_are_averaged_per_component() -> None:
    alg, _, state, _ = _mixed_allocated()
    g = torch.Generator().manual_seed(9)
    state = replace(  # every component nonzero, the ones nobody uploads included
        state, experts={k: torch.randn(v.shape, generator=g) for k, v in state.experts.items()}
    )
    cids = [1, 2]  # cluster 1 at ranks 4 and 2; client 4 and cluster 0 do not upload
    ups = {
        c: Upload(
            {
                "l.lora_A": torch.randn(MIXED[c].rank, D_IN_H, generator=g),
                "l.lora_B": torch.randn(D_OUT_H, MIXED[c].rank, generator=g),
                "l.router": torch.randn(3, D_IN_H, generator=g),
            },
            float(MIXED[c].num_examples),
        )
        for c in cids
    }
    new = alg.aggregate(state, ups, RoundInfo(2, 0))
    old_A, old_B = _np(state.experts["l.experts_A"][1]), _np(state.experts["l.experts_B"][1])
    ref_A, ref_B = ref_componentwise(old_A, old_B, _parts(ups, cids))
    got_A, got_B = _np(new.experts["l.experts_A"][1]), _np(new.experts["l.experts_B"][1])
    assert np.allclose(got_A, ref_A, atol=1e-6) and np.allclose(got_B, ref_B, atol=1e-6)
    assert np.array_equal(got_A[4], old_A[4]) and np.array_equal(got_B[:, 4], old_B[:, 4])
    w = [20.0, 30.0]
    router = np.average([_np(ups[c].tensors["l.router"]) for c in cids], axis=0, weights=w)
    assert np.allclose(_np(new.routers["1/l.router"]), router, atol=1e-6)
    assert torch.equal(new.experts["l.experts_A"][0], state.experts["l.experts_A"][0])
    ideal = sum(
        (wk / 50)
        * s_of(MIXED[c].rank)
        * _np(ups[c].tensors["l.lora_B"])
        @ _np(ups[c].tensors["l.lora_A"])
        for wk, c in zip(w, cids, strict=True)
    )
    applied = s_of(R_MAX) * ref_B[:, :4] @ ref_A[:4]  # the components averaged this round
    err = np.linalg.norm(ideal - applied) / np.linalg.norm(ideal)
    assert alg.round_metrics(new)["agg_error"] == pytest.approx(err, rel=1e-5)


def _mixed_tiny() -> TinySetup:
    return TinySetup(SPEC, [2, 4, 2, 4])


def test_a_mixed_rank_client_starts_from_the_global_mixture_of_its_cluster() -> None:
    alg = create_algorithm("fedlease", {"warmup_rounds": 1})
    assert isinstance(alg, FedLEASE)
    setup = _mixed_tiny()
    state, _, _, store = _drive(alg, setup, rounds=1)
    assert isinstance(state, FedLEASEState) and state.num_experts >= 2 and state.rank == 4
    g = torch.Generator().manual_seed(4)  # experts far from any client's warm-up LoRA
    state = replace(
        state, experts={k: torch.randn(v.shape, generator=g) for k, v in state.experts.items()}
    )
    for cid, r in enumerate(setup.ranks):
        model, payload, client_setup = _selection_client(alg, state, cid, store, setup)
        load_setup(model, client_setup)  # type: ignore[arg-type]
        own = int(payload.config["cluster"])  # type: ignore[attr-defined]
        t = payload.tensors  # type: ignore[attr-defined]
        for name, d_in in (("fc1", 6), ("fc2", 8)):
            layer = adapted(model)[name]
            assert layer.rank == r and layer.experts_A.shape[1] == 4  # type: ignore[union-attr]
            x = torch.randn(40, d_in, generator=torch.Generator().manual_seed(cid))
            got = (layer(x) - layer.base(x)).detach().double().numpy()
            EA = _np(t[f"{name}.experts_A"])
            EA[own, r:] = 0.0  # the own expert cut to its leading r_k components
            ref, _ = ref_expert_gates_and_output(
                x.double().numpy(),
                EA,
                _np(t[f"{name}.experts_B"]),
                _np(t[f"{name}.router"]),
                own,
                s_of(4),  # every expert at the global scaling s(r_max)
            )
            assert np.allclose(got, ref, atol=1e-5)
        # uploading the untrained pair and router leaves the experts as they were (lift undone)
        sent = keys.of_kind(client_setup.factors, "lora_A", "lora_B", "router")  # type: ignore[attr-defined]
        back = alg.aggregate(state, {cid: Upload(sent, 1.0)}, RoundInfo(2, 0))
        for k, v in state.experts.items():
            assert torch.allclose(back.experts[k], v, atol=1e-6)


def test_mixed_rank_uploads_have_the_client_rank_and_downloads_r_max() -> None:
    alg = create_algorithm("fedlease", {"warmup_rounds": 1})
    assert isinstance(alg, FedLEASE)
    setup = _mixed_tiny()
    state, pays, ups, store = _drive(alg, setup, rounds=3)
    assert isinstance(state, FedLEASEState)
    M, dims = state.num_experts, {"fc1": (8, 6), "fc2": (8, 8)}
    for cid, r in enumerate(setup.ranks):
        first = pays[0][cid].tensors  # type: ignore[attr-defined]
        assert first["local/fc1.lora_A"].shape == (r, 6) and first["local/fc2.lora_B"].shape == (
            8,
            r,
        )
        for rnd in range(3):
            up = ups[rnd][cid].tensors
            for name, (d_out, d_in) in dims.items():
                assert up[f"{name}.lora_A"].shape == (r, d_in)
                assert up[f"{name}.lora_B"].shape == (d_out, r)
                if rnd > 0:
                    t = pays[rnd][cid].tensors  # type: ignore[attr-defined]
                    assert t[f"{name}.experts_A"].shape == (M, 4, d_in)
                    assert t[f"{name}.experts_B"].shape == (M, d_out, 4)
                    assert up[f"{name}.router"].shape == (2 * M - 1, d_in)
        assert set(store[cid]) == {"local/classifier.weight", "local/classifier.bias"}
    assert all(all_finite(u.tensors) for u in ups[-1].values())


# ---- engine: bytes follow the round; hyperparameters


@pytest.mark.parametrize("policy", ["uniform", "cycle"])  # cycle: the smoke ranks [2, 4]
def test_engine_bytes_follow_warmup_then_selection(policy: str) -> None:
    cfg = config.load(
        SMOKE,
        [
            "algorithm=fedlease",
            "fed.rounds=4",
            "fed.fraction=0.5",
            "data.local_test_fraction=0.25",
            "train.steps=2",
            f"lora.rank_policy={policy}",
            "per_algorithm.fedlease.warmup_rounds=1",
            "per_algorithm.fedlease.max_experts=2",
        ],
    )
    exp = build(cfg)
    result = run(cfg, exp=exp)
    assert result.state.num_experts == 2
    shapes = shapes_of(template(exp.model), cfg.train.train_head)
    formula, seen = formula_of(FedLEASE), set()
    hp = {"warmup_rounds": 1, "num_experts": 2}
    ranks = [c.rank for c in exp.clients]
    assert (len(set(ranks)) > 1) == (policy == "cycle")
    for rec in result.history.records:
        sampled = sample_clients([c.cid for c in exp.clients], 0.5, cfg.seed, rec.round)
        down = up = 0
        for cid in sampled:
            contact = Contact(ranks[cid], rec.round, cid not in seen, max(ranks), hp)
            d, u = formula(shapes, contact)
            down, up = down + 4 * d, up + 4 * u
        seen.update(sampled)
        assert (rec.bytes_down, rec.bytes_up) == (down, up)
    assert result.history.records[-1].bytes_down > result.history.records[-1].bytes_up


def test_hyperparameters_are_validated() -> None:
    assert_rejected("fedlease", {"warmup_rounds": 0}, {"max_experts": 1})
