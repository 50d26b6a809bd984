"""Golden math of HetLoRA: zero-padding, norm weights, truncation, self-pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_rejected
from ilora.algorithms.base import create_algorithm
from ilora.config import TrainConfig
from ilora.lora.spec import LoRASpec
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=2.0, rank=2)
SHAPES = {"a": (3, 2), "b": (2, 3)}  # (d_out, d_in) of two adapted layers
TEMPLATE = {
    **{f"{m}.base": torch.zeros(s) for m, s in SHAPES.items()},
    "head.weight": torch.zeros(2),
}
CLIENTS = [ClientInfo(0, 1, 20), ClientInfo(1, 2, 60)]


def _case() -> tuple[object, dict[int, Upload], dict[int, dict[str, np.ndarray]]]:
    g = torch.Generator().manual_seed(11)
    state = create_algorithm("hetlora").server_init(TEMPLATE, CLIENTS, SPEC, 0)
    uploads, ref = {}, {}
    for c in CLIENTS:
        t = {"head.weight": torch.full((2,), float(c.cid))}
        for m, (d_out, d_in) in SHAPES.items():
            t[f"{m}.lora_A"] = torch.randn(c.rank, d_in, generator=g)  # (r_k, d_in)
            t[f"{m}.lora_B"] = torch.randn(d_out, c.rank, generator=g)  # (d_out, r_k)
        uploads[c.cid] = Upload(t, float(c.num_examples))
        ref[c.cid] = {k: v.double().numpy() for k, v in t.items()}
    return state, uploads, ref


def _pad(x: np.ndarray, r: int, kind: str) -> np.ndarray:
    if kind == "lora_A":
        return np.concatenate([x, np.zeros((r - x.shape[0], x.shape[1]))], axis=0)
    return np.concatenate([x, np.zeros((x.shape[0], r - x.shape[1]))], axis=1)


def _norm_weights(ref: dict[int, dict[str, np.ndarray]], data: bool) -> np.ndarray:
    norms = np.array(
        [
            np.sqrt(sum(np.linalg.norm(t[f"{m}.lora_B"] @ t[f"{m}.lora_A"]) ** 2 for m in SHAPES))
            for t in ref.values()
        ]
    )
    w = norms * (np.array([0.25, 0.75]) if data else 1.0)
    return w / w.sum()


@pytest.mark.parametrize("weighting", ["norm", "norm_times_data"])
def test_zero_padded_factors_are_averaged_with_norm_weights(weighting: str) -> None:
    state, uploads, ref = _case()
    # the factors as uploaded (rescale_b: false); the default's mapping: test_invariants.py
    new = create_algorithm("hetlora", {"weighting": weighting, "rescale_b": False}).aggregate(
        state, uploads, RoundInfo(1, 0)
    )
    w = _norm_weights(ref, data=weighting == "norm_times_data")
    for m in SHAPES:
        for kind in ("lora_A", "lora_B"):
            key = f"{m}.{kind}"
            expected = sum(w[c] * _pad(ref[c][key], 2, kind) for c in ref)
            assert np.allclose(new.tensors[key].numpy(), expected, atol=1e-6), key
    assert new.tensors["a.lora_A"].shape == (2, 2)  # r_max
    assert torch.allclose(new.tensors["head.weight"], torch.full((2,), 0.75))  # data weights


def test_agg_error_is_the_relative_distance_to_the_scaled_ideal() -> None:
    state, uploads, ref = _case()
    new = create_algorithm("hetlora").aggregate(state, uploads, RoundInfo(1, 0))
    p, num, den = [0.25, 0.75], 0.0, 0.0
    for m in SHAPES:
        ideal = sum(
            p[c]
            * (SPEC.alpha / ref[c][f"{m}.lora_A"].shape[0])
            * ref[c][f"{m}.lora_B"]
            @ ref[c][f"{m}.lora_A"]
            for c in ref
        )
        applied = (SPEC.alpha / 2) * (
            new.tensors[f"{m}.lora_B"].double().numpy()
            @ new.tensors[f"{m}.lora_A"].double().numpy()
        )
        num, den = num + np.linalg.norm(ideal - applied) ** 2, den + np.linalg.norm(ideal) ** 2
    assert new.metrics["agg_error"] == pytest.approx(np.sqrt(num / den), rel=1e-5)


@pytest.mark.parametrize("rescale_b", [True, False])
def test_download_truncates_to_the_client_rank(rescale_b: bool) -> None:
    state, uploads, _ = _case()
    alg = create_algorithm("hetlora", {"rescale_b": rescale_b})
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    pay = alg.download(new, CLIENTS[0], RoundInfo(2, 0)).tensors
    assert torch.equal(pay["a.lora_A"], new.tensors["a.lora_A"][:1])
    ratio = SPEC.scale(2) / SPEC.scale(1) if rescale_b else 1.0  # s(r_max)/s(r_k)
    assert torch.allclose(pay["b.lora_B"], ratio * new.tensors["b.lora_B"][:, :1], rtol=1e-6)
    assert torch.equal(pay["head.weight"], new.tensors["head.weight"])


def _ctx(rank: int, payload: dict[str, torch.Tensor]) -> ClientContext:
    return ClientContext(
        ClientInfo(0, rank, 10), RoundInfo(1, 0), Payload(payload), SPEC, TrainConfig(), base={}
    )


def _factors(r: int, tail: float) -> dict[str, torch.Tensor]:
    """Rank-``r`` factors of a 5x6 layer whose last component is scaled by ``tail``."""
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(r, 6, generator=g), torch.randn(5, r, generator=g)  # (r, 6), (5, r)
    B[:, -1] *= tail
    return {"l.lora_A": A, "l.lora_B": B}


def test_keep_rank_drops_the_trailing_share_but_not_below_min_rank() -> None:
    alg = create_algorithm("hetlora", {"prune_fraction": 0.25, "min_rank": 2})
    assert [alg.keep_rank(r) for r in (1, 2, 3, 4, 8)] == [2, 2, 2, 3, 6]


def test_a_small_trailing_norm_prunes_the_rank_and_it_sticks() -> None:
    alg = create_algorithm("hetlora", {"prune_threshold": 0.05, "rescale_b": False})
    small = _factors(4, tail=1e-3)
    A, B = small["l.lora_A"].double().numpy(), small["l.lora_B"].double().numpy()
    ratio = np.linalg.norm(B[:, 3:] @ A[3:]) / np.linalg.norm(B @ A)
    assert ratio < 0.05 and alg.tail_ratio(small, 3) == pytest.approx(ratio, rel=1e-5)
    up, cstate = alg.upload(small, _ctx(4, {}), {})
    assert int(cstate["hetlora/rank"]) == 3 and up.metrics["rank"] == 3.0
    assert torch.equal(up.tensors["l.lora_A"], small["l.lora_A"][:3])
    assert torch.equal(up.tensors["l.lora_B"], small["l.lora_B"][:, :3])
    # next round: the server still sends rank 4, the client keeps its pruned rank 3
    setup, _ = alg.client_init(_ctx(4, _factors(4, tail=1.0)), cstate)
    assert setup.factors["l.lora_A"].shape == (3, 6) and setup.factors["l.lora_B"].shape == (5, 3)


def test_a_large_trailing_norm_keeps_the_rank() -> None:
    alg = create_algorithm("hetlora")
    up, cstate = alg.upload(_factors(4, tail=1.0), _ctx(4, {}), {})
    assert int(cstate["hetlora/rank"]) == 4 and up.tensors["l.lora_A"].shape == (4, 6)
    never = create_algorithm("hetlora", {"prune_threshold": 0.0})
    assert int(never.upload(_factors(4, tail=0.0), _ctx(4, {}), {})[1]["hetlora/rank"]) == 4


def test_regulariser_is_gamma_times_the_trailing_product_norm() -> None:
    alg = create_algorithm("hetlora", {"gamma": 0.1, "prune_fraction": 0.5})
    f = _factors(4, tail=1.0)
    A, B = f["l.lora_A"].double().numpy(), f["l.lora_B"].double().numpy()
    term = alg.loss_term(f, _ctx(4, f), {})
    assert term is not None
    assert float(term) == pytest.approx(0.1 * np.linalg.norm(B[:, 2:] @ A[2:]), rel=1e-5)
    zero_B = {"l.lora_A": f["l.lora_A"], "l.lora_B": torch.zeros(5, 4, requires_grad=True)}
    term = alg.loss_term(zero_B, _ctx(4, zero_B), {})
    assert term is not None
    term.backward()  # type: ignore[no-untyped-call]
    assert zero_B["l.lora_B"].grad is not None and torch.all(zero_B["l.lora_B"].grad == 0)
    assert create_algorithm("hetlora", {"gamma": 0.0}).loss_term(f, _ctx(4, f), {}) is None


def test_invalid_hyperparameters_name_the_field() -> None:
    assert_rejected(
        "hetlora",
        {"weighting": "data"},
        {"gamma": -1.0},
        {"prune_fraction": 1.0},
        {"prune_threshold": 1.5},
        {"min_rank": 0},
    )


def test_pruning_keeps_the_product_of_the_kept_components_at_the_new_scaling() -> None:
    """rescale_b: the pruned upload applies s(q), so B[:, :q] is sent times s(r)/s(q)."""
    alg = create_algorithm("hetlora", {"prune_threshold": 0.05})
    small = _factors(4, tail=1e-3)
    up, cstate = alg.upload(small, _ctx(4, {}), {})
    A, B = up.tensors["l.lora_A"].double().numpy(), up.tensors["l.lora_B"].double().numpy()
    kept = small["l.lora_B"][:, :3].double().numpy() @ small["l.lora_A"][:3].double().numpy()
    assert A.shape == (3, 6)
    assert np.allclose(SPEC.scale(3) * B @ A, SPEC.scale(4) * kept, atol=1e-5)
    # next round: rank-4 factors sent for s(4), cut to 3 and rescaled: the same product
    sent = _factors(4, tail=1.0)
    setup, _ = alg.client_init(_ctx(4, sent), cstate)
    got = setup.factors["l.lora_B"].double().numpy() @ setup.factors["l.lora_A"].double().numpy()
    want = sent["l.lora_B"][:, :3].double().numpy() @ sent["l.lora_A"][:3].double().numpy()
    assert np.allclose(SPEC.scale(3) * got, SPEC.scale(4) * want, atol=1e-5)
