"""Golden math of CE-LoRA: only the core C (and the head) travel, personalized weights from data
and model similarity, per-class statistics of the frozen backbone sent once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinyMLP
from conftest import TinySetup
from conftest import assert_rejected
from conftest import run_rounds
from conftest import tiny_data
from ilora import config
from ilora.algorithms.base import create_algorithm
from ilora.engine.simulation import run
from ilora.lora.spec import LoRASpec
from ilora.tensors import num_bytes
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
SHAPES = {"a": (3, 4), "b": (4, 5)}  # (d_out, d_in) of two adapted layers
TEMPLATE = {
    **{f"{m}.base": torch.zeros(s) for m, s in SHAPES.items()},
    "head.weight": torch.zeros(2, 3),
}
SPEC = LoRASpec(alpha=2.0, rank=2)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


# ---- an independent NumPy reference of the weights (module docstring of ce_lora)
def _project(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex by bisection on the threshold."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(v - hi, 0)


def _data_similarity(stats: list[dict[str, np.ndarray]], sigma: float | None) -> np.ndarray:
    K = len(stats)
    overlap, F = np.zeros((K, K)), np.zeros((K, K))
    for i in range(K):
        for j in range(K):
            a, b = stats[i], stats[j]
            pa, pb = a["count"] / a["count"].sum(), b["count"] / b["count"].sum()
            shared = (a["count"] > 0) & (b["count"] > 0)
            m = np.where(shared, np.minimum(pa, pb), 0.0)
            w2 = ((a["mean"] - b["mean"]) ** 2).sum(1) + (
                (np.sqrt(a["var"]) - np.sqrt(b["var"])) ** 2
            ).sum(1)
            overlap[i, j] = m.sum()
            F[i, j] = (m * w2).sum() / m.sum() if m.sum() > 0 else 0.0
    if sigma is None:
        pos = sorted(F[i, j] for i in range(K) for j in range(i + 1, K) if overlap[i, j] > 0)
        pos = [f for f in pos if f > 0]
        sigma = pos[(len(pos) - 1) // 2] if pos else 1.0
    S = overlap * np.exp(-F / sigma)
    np.fill_diagonal(S, 1.0)
    return S


def _cosine(vectors: list[np.ndarray]) -> np.ndarray:
    K = len(vectors)
    S = np.eye(K)
    for i in range(K):
        for j in range(K):
            if i != j:
                u, v = vectors[i], vectors[j]
                S[i, j] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return S


def _stats(g: torch.Generator, counts: list[int], d: int = 2) -> dict[str, torch.Tensor]:
    K = len(counts)
    present = torch.tensor(counts)[:, None] > 0
    return {
        "count": torch.tensor(counts, dtype=torch.float32),
        "mean": torch.randn(K, d, generator=g) * present,
        "var": torch.rand(K, d, generator=g) * present,
    }


def _round(clients: list[ClientInfo], seed: int, **args: object):  # type: ignore[no-untyped-def]
    """Round 1 on hand-made uploads: random cores, heads and class statistics."""
    alg = create_algorithm("ce-lora", args)
    state = alg.server_init(TEMPLATE, clients, SPEC, 0)
    g = torch.Generator().manual_seed(seed)
    counts = [[5, 3, 0], [1, 4, 6], [2, 0, 7]]
    ups = {}
    for c in clients:
        t = {
            f"{m}.lora_C": torch.eye(c.rank) + torch.randn(c.rank, c.rank, generator=g)
            for m in SHAPES
        }
        t["head.weight"] = torch.randn(2, 3, generator=g)
        t.update({f"stats/{k}": v for k, v in _stats(g, counts[c.cid]).items()})
        ups[c.cid] = Upload(t, float(c.num_examples))
    return alg, state, ups, alg.aggregate(state, ups, RoundInfo(1, 0))


CLIENTS = [ClientInfo(0, 2, 10), ClientInfo(1, 2, 30), ClientInfo(2, 2, 20)]


@pytest.mark.parametrize(
    ("args", "sigma"),
    [({}, None), ({"bandwidth": 0.7, "lam": 2.0, "beta": 0.3}, 0.7), ({"beta": 1.0}, None)],
)
def test_personalized_cores_and_heads_match_a_numpy_reference(
    args: dict[str, float], sigma: float | None
) -> None:
    alg, state, ups, new = _round(CLIENTS, 1, **args)
    lam, beta = float(args.get("lam", 1.0)), float(args.get("beta", 0.5))
    p = np.array([10.0, 30.0, 20.0]) / 60
    stats = [
        {k: _np(ups[c.cid].tensors[f"stats/{k}"]) for k in ("count", "mean", "var")}
        for c in CLIENTS
    ]
    sD = _data_similarity(stats, sigma)
    updates = [  # every client received I at round 1: the update is C - I
        np.concatenate(
            [(_np(ups[c.cid].tensors[f"{m}.lora_C"]) - np.eye(2)).ravel() for m in SHAPES]
        )
        for c in CLIENTS
    ]
    sM = _cosine(updates)
    W = np.stack([_project(p + lam / 2 * (beta * sD[i] + (1 - beta) * sM[i])) for i in range(3)])
    assert np.allclose(W.sum(1), 1.0) and (W >= 0).all()
    assert not np.allclose(W, p[None, :], atol=1e-3)  # the similarities do move the weights
    for i, c in enumerate(CLIENTS):
        pay = alg.download(new, c, RoundInfo(2, 0)).tensors
        assert set(pay) == {"a.lora_C", "b.lora_C", "head.weight"}
        for k in pay:
            ref = sum(W[i, j] * _np(ups[d.cid].tensors[k]) for j, d in enumerate(CLIENTS))
            assert np.allclose(_np(pay[k]), ref, atol=1e-5), (c.cid, k)
    # export: the p-weighted mean core and head, with the common A and B = 0
    out = alg.export(new).factors
    for k in ("a.lora_C", "b.lora_C", "head.weight"):
        ref = sum(p[j] * _np(ups[d.cid].tensors[k]) for j, d in enumerate(CLIENTS))
        assert np.allclose(_np(out[k]), ref, atol=1e-5)
    assert not out["a.lora_B"].any() and out["a.lora_A"].shape == (2, 4)
    assert alg.round_metrics(new) == {}


def test_weights_model_similarity_and_lam_zero() -> None:
    """model_similarity: weights uses the cores themselves; lam = 0 gives p (FedAvg of C)."""
    alg, state, ups, new = _round(CLIENTS, 2, model_similarity="weights", beta=0.0)
    cores = [
        np.concatenate([_np(ups[c.cid].tensors[f"{m}.lora_C"]).ravel() for m in SHAPES])
        for c in CLIENTS
    ]
    p = np.array([10.0, 30.0, 20.0]) / 60
    W = np.stack([_project(p + 0.5 * row) for row in _cosine(cores)])
    got = _np(alg.download(new, CLIENTS[1], RoundInfo(2, 0)).tensors["b.lora_C"])
    ref = sum(W[1, j] * _np(ups[c.cid].tensors["b.lora_C"]) for j, c in enumerate(CLIENTS))
    assert np.allclose(got, ref, atol=1e-5)
    alg, state, ups, new = _round(CLIENTS, 2, lam=0.0)
    got = _np(alg.download(new, CLIENTS[0], RoundInfo(2, 0)).tensors["a.lora_C"])
    ref = sum(p[j] * _np(ups[c.cid].tensors["a.lora_C"]) for j, c in enumerate(CLIENTS))
    assert np.allclose(got, ref, atol=1e-6)


def test_mixed_ranks_average_each_core_entry_over_the_clients_that_hold_it() -> None:
    """C̃_i[a, b] = Σ_{j: r_j > max(a, b)} w_ij C_j[a, b] / Σ_{same j} w_ij, at r_i × r_i."""
    clients = [ClientInfo(0, 1, 10), ClientInfo(1, 2, 30), ClientInfo(2, 3, 20)]
    alg, state, ups, new = _round(clients, 3, lam=0.0)  # lam = 0: w_i = p for everyone
    p = np.array([10.0, 30.0, 20.0]) / 60
    C = [_np(ups[c.cid].tensors["a.lora_C"]) for c in clients]
    for c in clients:
        got = _np(alg.download(new, c, RoundInfo(2, 0)).tensors["a.lora_C"])
        assert got.shape == (c.rank, c.rank)
        for a in range(c.rank):
            for b in range(c.rank):
                own = [j for j, d in enumerate(clients) if d.rank > max(a, b)]
                ref = sum(p[j] * C[j][a, b] for j in own) / sum(p[j] for j in own)
                assert np.isclose(got[a, b], ref, atol=1e-6), (c.cid, a, b)
    # a client never aggregated receives the leading block of the global core C̄
    late = ClientInfo(3, 2, 5)
    got = _np(alg.download(new, late, RoundInfo(2, 0)).tensors["a.lora_C"])
    assert np.allclose(got, _np(alg.export(new).factors["a.lora_C"])[:2, :2])


def test_first_round_sends_identity_and_the_initial_head() -> None:
    alg = create_algorithm("ce-lora")
    state = alg.server_init(TEMPLATE, CLIENTS, SPEC, 0)
    pay = alg.download(state, CLIENTS[0], RoundInfo(1, 0))
    assert torch.equal(pay.tensors["a.lora_C"], torch.eye(2))
    assert torch.equal(pay.tensors["head.weight"], TEMPLATE["head.weight"])
    assert num_bytes(pay.tensors) == 4 * (2 * 2 * 2 + 6)  # r² per layer + head, no A or B


def test_only_the_core_the_head_and_once_the_statistics_travel(tiny_setup: TinySetup) -> None:
    res = run_rounds("ce-lora", tiny_setup, rounds=2)
    ranks = {c.cid: c.rank for c in res.clients}
    assert sorted(set(ranks.values())) == [2, 3, 4]
    core_head = {"fc1.lora_C", "fc2.lora_C", "classifier.weight", "classifier.bias"}
    stats = {"stats/count", "stats/mean", "stats/var"}
    for t, (pays, ups) in enumerate(zip(res.payloads, res.uploads, strict=True)):
        for cid, up in ups.items():
            r = ranks[cid]
            assert set(res.payloads[t][cid].tensors) == core_head
            assert num_bytes(pays[cid].tensors) == 4 * (2 * r * r + 27)
            first = t == 0
            assert set(up.tensors) == core_head | (stats if first else set())
            assert num_bytes(up.tensors) == 4 * (2 * r * r + 27 + (3 * (2 * 8 + 1) if first else 0))
    for cid, cstate in res.cstates.items():  # A and B stay on the client
        assert set(cstate) == {f"local/fc{i}.lora_{f}" for i in (1, 2) for f in "AB"}
        assert cstate["local/fc1.lora_A"].shape == (ranks[cid], 6)
    assert not torch.equal(
        res.cstates[0]["local/fc1.lora_B"], res.cstates[1]["local/fc1.lora_B"][:, :2]
    )


def test_statistics_are_those_of_the_frozen_backbone(tiny_setup: TinySetup) -> None:
    """The uploaded class statistics equal a plain NumPy computation on the hidden features of
    the pretrained MLP (before its head), whatever adapter the model holds."""
    res = run_rounds("ce-lora", tiny_setup, rounds=1)
    plain = TinyMLP()
    for c in res.clients:
        data = tiny_data(c.num_examples, c.cid)  # run_rounds' data, seed 0
        with torch.no_grad():
            h = torch.relu(plain.fc2(torch.relu(plain.fc1(data.inputs["x"]))))
        x, y = _np(h), data.labels.numpy()
        up = res.uploads[0][c.cid].tensors
        for cls in range(3):
            rows = x[y == cls]
            assert up["stats/count"][cls] == len(rows)
            if len(rows):
                assert np.allclose(_np(up["stats/mean"][cls]), rows.mean(0), atol=1e-5)
                assert np.allclose(_np(up["stats/var"][cls]), rows.var(0), atol=1e-5)


def test_hyperparameters_are_validated() -> None:
    assert_rejected(
        "ce-lora", {"lam": -1.0}, {"beta": 1.5}, {"bandwidth": -0.1}, {"stats_batches": -1}
    )


def test_personalized_evaluation_is_reported() -> None:
    cfg = config.load(SMOKE, ["algorithm=ce-lora", "data.local_test_fraction=0.25", "fed.rounds=2"])
    history = run(cfg).history
    assert 0.0 <= history.records[-1].metrics["personal_accuracy"] <= 1.0
