"""Golden math of FL-TAC: K-means over flattened adapters, FedAvg within each cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TinySetup
from conftest import assert_rejected
from conftest import run_rounds
from ilora.algorithms._clustering import kmeans
from ilora.algorithms._clustering import kmeans_best_of
from ilora.algorithms.base import create_algorithm
from ilora.config import TrainConfig
from ilora.lora.spec import LoRASpec
from ilora.seeding import generator
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0, rank=2)
TEMPLATE = {"l.base": torch.zeros(3, 2), "head.weight": torch.zeros(2, 2)}
WEIGHTS = [10.0, 30.0, 20.0, 40.0, 25.0]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def _partition(labels: list[int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def test_kmeans_recovers_planted_clusters_deterministically() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10.0, size=(3, 12))
    truth = rng.permutation(np.repeat([0, 1, 2], 6))  # 18 points, shuffled
    X = torch.tensor(centres[truth] + rng.normal(scale=0.3, size=(18, 12)))
    labels = kmeans(X, 3, generator(0, "test"))
    assert _partition(labels.tolist()) == _partition(truth.tolist())
    assert labels[0] == 0 and sorted(set(labels.tolist())) == [0, 1, 2]  # renumbered
    for seed in range(5):  # any init recovers them; the same seed gives the same labels
        again = kmeans(X, 3, generator(seed, "test"))
        assert _partition(again.tolist()) == _partition(truth.tolist())
        assert torch.equal(again, kmeans(X, 3, generator(seed, "test")))
    assert kmeans(X, 1, generator(0, "test")).tolist() == [0] * 18
    assert _partition(kmeans(X, 18, generator(0, "test")).tolist()) == {
        frozenset({i}) for i in range(18)
    }


def test_kmeans_with_duplicate_points_does_not_fail() -> None:
    X = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    labels = kmeans(X, 3, generator(0, "dup"))
    assert labels[0] == labels[1] == labels[2] and labels[3] != labels[0]


def _uploads(ranks: list[int], g: torch.Generator) -> dict[int, Upload]:
    """Clients 0, 1 near one adapter, 2, 3, 4 near another (planted tasks); random heads."""
    centres = [torch.randn(8, generator=g) * 5 for _ in range(2)]
    ups = {}
    for c, r in enumerate(ranks):
        z = centres[0 if c < 2 else 1] + 0.1 * torch.randn(8, generator=g)
        A, B = z[:4].reshape(2, 2)[:r], z[4:].reshape(2, 2).repeat(2, 1)[:3, :r]
        ups[c] = Upload(
            {
                "l.lora_A": A.clone(),
                "l.lora_B": B.clone(),
                "head.weight": torch.randn(2, 2, generator=g),
            },
            WEIGHTS[c],
        )
    return ups


def _mean(ups: dict[int, Upload], members: list[int], key: str, r: int = 2) -> np.ndarray:
    """Weighted mean of the members' tensors, zero-padded to rank r (numpy reference)."""
    arrays = []
    for c in members:
        t = _np(ups[c].tensors[key])
        if key == "l.lora_A":
            t = np.vstack([t, np.zeros((r - t.shape[0], t.shape[1]))])
        elif key == "l.lora_B":
            t = np.hstack([t, np.zeros((t.shape[0], r - t.shape[1]))])
        arrays.append(t)
    return np.average(arrays, axis=0, weights=[WEIGHTS[c] for c in members])


@pytest.mark.parametrize("head", ["cluster", "global"])
def test_each_client_downloads_its_clusters_fedavg(head: str) -> None:
    clients = [ClientInfo(c, 2, int(w)) for c, w in enumerate(WEIGHTS)]
    alg = create_algorithm("fl-tac", {"num_clusters": 2, "head": head})
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    ups = _uploads([2] * 5, torch.Generator().manual_seed(0))
    state = alg.aggregate(state, ups, RoundInfo(1, 0))
    assert _partition([state.clusters[c] for c in range(5)]) == {
        frozenset({0, 1}),
        frozenset({2, 3, 4}),
    }
    for members in ([0, 1], [2, 3, 4]):
        for c in members:
            pay = alg.download(state, clients[c], RoundInfo(2, 0)).tensors
            for key in ("l.lora_A", "l.lora_B"):
                assert np.allclose(_np(pay[key]), _mean(ups, members, key), atol=1e-6)
            heads = members if head == "cluster" else list(range(5))
            assert np.allclose(_np(pay["head.weight"]), _mean(ups, heads, "head.weight"), atol=1e-6)
    glob = alg.export(state).factors  # the FedAvg of all uploads
    assert np.allclose(_np(glob["l.lora_A"]), _mean(ups, list(range(5)), "l.lora_A"), atol=1e-6)


def test_in_cluster_agg_error_is_pooled_over_clusters() -> None:
    clients = [ClientInfo(c, 2, int(w)) for c, w in enumerate(WEIGHTS)]
    alg = create_algorithm("fl-tac")
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    ups = _uploads([2] * 5, torch.Generator().manual_seed(1))
    state = alg.aggregate(state, ups, RoundInfo(1, 0))
    s, num, den = SPEC.scale(2), 0.0, 0.0
    for members in ([0, 1], [2, 3, 4]):
        w = np.array([WEIGHTS[c] for c in members]) / sum(WEIGHTS[c] for c in members)
        exact = sum(
            wi * s * _np(ups[c].tensors["l.lora_B"]) @ _np(ups[c].tensors["l.lora_A"])
            for wi, c in zip(w, members, strict=True)
        )
        B, A = (_mean(ups, members, k).astype(np.float32) for k in ("l.lora_B", "l.lora_A"))
        applied = s * B.astype(np.float64) @ A.astype(np.float64)  # the stored float32 means
        num += np.square(exact - applied).sum()
        den += np.square(exact).sum()
    assert num > 0
    assert state.metrics["agg_error"] == pytest.approx(np.sqrt(num / den), rel=1e-5)


def test_never_seen_clients_get_the_global_mean_and_absent_ones_their_last_answer() -> None:
    clients = [ClientInfo(c, 2, int(w)) for c, w in enumerate(WEIGHTS)]
    alg = create_algorithm("fl-tac", {"num_clusters": 2})
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    first = alg.download(state, clients[4], RoundInfo(1, 0)).tensors  # the shared init
    assert torch.equal(first["l.lora_B"], torch.zeros(3, 2))
    ups = _uploads([2] * 5, torch.Generator().manual_seed(2))
    state = alg.aggregate(state, {c: ups[c] for c in (0, 1, 2, 3)}, RoundInfo(1, 0))
    pay = alg.download(state, clients[4], RoundInfo(2, 0)).tensors  # never seen: global mean
    for key in ("l.lora_A", "l.lora_B", "head.weight"):
        assert np.allclose(_np(pay[key]), _mean(ups, [0, 1, 2, 3], key), atol=1e-6)
    answer = alg.download(state, clients[0], RoundInfo(2, 0)).tensors
    state = alg.aggregate(state, {c: ups[c] for c in (2, 3, 4)}, RoundInfo(2, 0))
    later = alg.download(state, clients[0], RoundInfo(3, 0)).tensors  # absent in round 2
    assert all(torch.equal(later[k], answer[k]) for k in answer)
    assert np.allclose(_np(answer["l.lora_A"]), _mean(ups, [0, 1], "l.lora_A"), atol=1e-6)


def test_mixed_ranks_pad_for_clustering_and_averaging_and_truncate_the_download() -> None:
    ranks = [1, 2, 2, 1, 2]
    clients = [ClientInfo(c, r, int(WEIGHTS[c])) for c, r in enumerate(ranks)]
    # the factors as uploaded (rescale_b: false); the default's mapping: test_invariants.py
    alg = create_algorithm("fl-tac", {"num_clusters": 2, "rescale_b": False})
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    assert alg.download(state, clients[0], RoundInfo(1, 0)).tensors["l.lora_A"].shape == (1, 2)
    ups = _uploads(ranks, torch.Generator().manual_seed(3))
    state = alg.aggregate(state, ups, RoundInfo(1, 0))
    groups = _partition([state.clusters[c] for c in range(5)])
    assert groups == {frozenset({0, 1}), frozenset({2, 3, 4})}
    for members in ([0, 1], [2, 3, 4]):
        for c in members:
            pay = alg.download(state, clients[c], RoundInfo(2, 0)).tensors
            r = ranks[c]
            assert pay["l.lora_A"].shape == (r, 2) and pay["l.lora_B"].shape == (3, r)
            assert np.allclose(_np(pay["l.lora_A"]), _mean(ups, members, "l.lora_A")[:r], atol=1e-6)
            assert np.allclose(
                _np(pay["l.lora_B"]), _mean(ups, members, "l.lora_B")[:, :r], atol=1e-6
            )


def test_the_personal_model_is_the_downloaded_cluster_adapter(tiny_setup: TinySetup) -> None:
    alg = create_algorithm("fl-tac")
    assert alg.personalized and alg.heterogeneous_ranks
    res = run_rounds("fl-tac", tiny_setup)
    c = res.clients[1]
    pay = alg.download(res.state, c, RoundInfo(3, 0))
    ctx = ClientContext(c, RoundInfo(3, 0), pay, tiny_setup.spec, TrainConfig(), base={})
    setup, _ = alg.client_init(ctx, {})
    assert setup.factors.keys() == pay.tensors.keys()
    assert all(torch.equal(setup.factors[k], pay.tensors[k]) for k in pay.tensors)
    assert setup.factors["fc1.lora_A"].shape == (c.rank, 6)
    assert set(res.state.clusters) == {0, 1, 2}


def test_one_cluster_is_fedavg() -> None:
    clients = [ClientInfo(c, 2, int(w)) for c, w in enumerate(WEIGHTS)]
    alg = create_algorithm("fl-tac", {"num_clusters": 1})
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    ups = _uploads([2] * 5, torch.Generator().manual_seed(4))
    state = alg.aggregate(state, ups, RoundInfo(1, 0))
    for c in clients:
        pay = alg.download(state, c, RoundInfo(2, 0)).tensors
        for key in ("l.lora_A", "l.lora_B", "head.weight"):
            assert np.allclose(_np(pay[key]), _mean(ups, list(range(5)), key), atol=1e-6)


def test_invalid_hyperparameters_are_rejected() -> None:
    assert_rejected(
        "fl-tac",
        {"num_clusters": 0},
        {"num_clusters": 1.5},
        {"head": "local"},
        {"kmeans_starts": 0},
    )


def _wcss(X: np.ndarray, labels: np.ndarray) -> float:
    """Within-cluster sum of squares, written here independently."""
    return float(sum(((X[labels == j] - X[labels == j].mean(0)) ** 2).sum() for j in set(labels)))


def test_ten_kmeans_starts_find_the_true_tasks_where_one_start_does_not() -> None:
    """12 clients of 4 tasks: one k-means++ start merges two tasks; ten find them (n_init=10)."""
    g = torch.Generator().manual_seed(5)
    centers = torch.randn(4, 6, generator=g) * 3
    truth = torch.arange(12) // 3
    X = centers[truth] + torch.randn(12, 6, generator=g)  # (12, 6)
    one = kmeans(X, 4, torch.Generator().manual_seed(1))
    ten = kmeans_best_of(X, 4, torch.Generator().manual_seed(1), 10)  # the same first start
    groups = _partition(truth.tolist())
    assert _partition(one.tolist()) != groups
    assert _partition(ten.tolist()) == groups
    Xn = X.double().numpy()
    assert _wcss(Xn, ten.numpy()) == pytest.approx(_wcss(Xn, truth.numpy()))
    assert _wcss(Xn, one.numpy()) > 2 * _wcss(Xn, truth.numpy())
    alg = create_algorithm("fl-tac", {"num_clusters": 4})
    assert alg.kmeans_starts == 10  # the released server's KMeans(n_init=10) is the default
