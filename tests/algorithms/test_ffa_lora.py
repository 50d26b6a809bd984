"""Golden math of FFA-LoRA: frozen shared A, mean of B, exact aggregate, A never sent."""

from __future__ import annotations

import numpy as np
import torch

from conftest import TinySetup
from conftest import run_rounds
from ilora.algorithms.base import create_algorithm
from ilora.config import TrainConfig
from ilora.lora.spec import LoRASpec
from ilora.lora.state import template
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=2.0, rank=2)
TEMPLATE = {"l.base": torch.zeros(3, 2), "head.weight": torch.zeros(2, 2)}  # d_out 3, d_in 2


def _case(ranks: tuple[int, int]) -> tuple[object, dict[int, Upload], list[np.ndarray]]:
    g = torch.Generator().manual_seed(4)
    clients = [ClientInfo(0, ranks[0], 20), ClientInfo(1, ranks[1], 60)]
    state = create_algorithm("ffa-lora").server_init(TEMPLATE, clients, SPEC, 0)
    Bs = [torch.randn(3, c.rank, generator=g) for c in clients]  # (d_out, r_k)
    uploads = {
        c.cid: Upload(
            {"l.lora_B": Bs[c.cid], "head.weight": torch.full((2, 2), float(c.cid))},
            float(c.num_examples),
        )
        for c in clients
    }
    return state, uploads, [b.double().numpy() for b in Bs]


def _pad(b: np.ndarray, r: int) -> np.ndarray:
    return np.concatenate([b, np.zeros((b.shape[0], r - b.shape[1]))], axis=1)


def test_equal_ranks_average_b_and_keep_a() -> None:
    state, uploads, Bs = _case((2, 2))
    new = create_algorithm("ffa-lora").aggregate(state, uploads, RoundInfo(1, 0))
    assert np.allclose(new.tensors["l.lora_B"].numpy(), np.average(Bs, axis=0, weights=[20, 60]))
    assert torch.equal(new.tensors["l.lora_A"], state.tensors["l.lora_A"])
    assert torch.allclose(new.tensors["head.weight"], torch.full((2, 2), 0.75))
    assert new.metrics["agg_error"] < 1e-6


def test_mixed_ranks_are_exact_with_the_scaling_folded() -> None:
    state, uploads, Bs = _case((1, 2))
    new = create_algorithm("ffa-lora").aggregate(state, uploads, RoundInfo(1, 0))
    A = state.tensors["l.lora_A"].double().numpy()  # (2, 2): the one shared A at r_max
    p, s = [0.25, 0.75], {1: SPEC.alpha / 1, 2: SPEC.alpha / 2}
    ideal = sum(p[k] * s[b.shape[1]] * b @ A[: b.shape[1]] for k, b in enumerate(Bs))
    B_ref = sum(p[k] * s[b.shape[1]] / s[2] * _pad(b, 2) for k, b in enumerate(Bs))
    assert np.allclose(new.tensors["l.lora_B"].numpy(), B_ref, atol=1e-6)
    assert np.allclose(s[2] * new.tensors["l.lora_B"].double().numpy() @ A, ideal, atol=1e-6)
    assert new.metrics["agg_error"] < 1e-6


def test_download_is_b_and_head_only_rescaled_to_the_client_rank() -> None:
    state, uploads, _ = _case((1, 2))
    alg = create_algorithm("ffa-lora")
    new = alg.aggregate(state, uploads, RoundInfo(1, 0))
    pay = alg.download(new, ClientInfo(0, 1, 20), RoundInfo(2, 0))
    assert sorted(pay.tensors) == ["head.weight", "l.lora_B"] and pay.config == {"rank_max": 2}
    B = new.tensors["l.lora_B"].numpy()
    assert np.allclose(pay.tensors["l.lora_B"].numpy(), (1 / 2) * B[:, :1])  # s_max / s_1 = 1/2


def test_client_regenerates_the_leading_rows_of_the_shared_a_and_trains_only_b() -> None:
    state, _, _ = _case((1, 2))
    alg = create_algorithm("ffa-lora")
    client = ClientInfo(0, 1, 20)
    pay = alg.download(state, client, RoundInfo(3, 0))
    ctx = ClientContext(client, RoundInfo(3, 0), pay, SPEC, TrainConfig(), base=TEMPLATE)
    setup, _ = alg.client_init(ctx, {})
    assert torch.equal(setup.factors["l.lora_A"], state.tensors["l.lora_A"][:1])  # bitwise
    assert setup.trainable == frozenset({"l.lora_B", "head.weight"})
    up, _ = alg.upload(dict(setup.factors), ctx, {})
    assert "l.lora_A" not in up.tensors and up.weight == 20.0


def test_end_to_end_a_stays_fixed_is_never_sent_and_the_aggregate_is_exact() -> None:
    setup = TinySetup(LoRASpec(alpha=4.0), [2, 4, 3])
    alg = create_algorithm("ffa-lora")
    start = alg.server_init(template(setup.model()), setup.clients(), setup.spec, 0)
    res = run_rounds("ffa-lora", setup, rounds=2)
    assert torch.equal(res.state.tensors["fc1.lora_A"], start.tensors["fc1.lora_A"])
    for group in [*res.payloads, *res.uploads]:
        assert all("fc1.lora_A" not in item.tensors for item in group.values())
    assert res.state.metrics["agg_error"] < 1e-6
