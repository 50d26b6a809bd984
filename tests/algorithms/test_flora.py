"""Golden math of FLoRA: the residual is the running sum of the clients' scaled products."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TinySetup
from conftest import run_rounds
from ilora.algorithms.base import create_algorithm
from ilora.lora.spec import LoRASpec
from ilora.tensors import num_bytes
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload

CLIENTS = [ClientInfo(0, 1, 20), ClientInfo(1, 2, 60)]  # mixed ranks
TEMPLATE = {"l.base": torch.zeros(3, 2), "head.weight": torch.ones(2, 2)}  # layer (d_out, d_in)


def _scale(spec: LoRASpec, r: int) -> float:
    alpha = spec.alpha * r / spec.rank if spec.alpha_scales_with_rank else spec.alpha
    return alpha / r


def _uploads(g: torch.Generator, weights: list[float]) -> dict[int, Upload]:
    return {
        c.cid: Upload(
            {
                "l.lora_A": torch.randn(c.rank, 2, generator=g),  # (r, d_in)
                "l.lora_B": torch.randn(3, c.rank, generator=g),  # (d_out, r)
                "head.weight": torch.randn(2, 2, generator=g),
            },
            weights[c.cid],
        )
        for c in CLIENTS
    }


@pytest.mark.parametrize("scales_with_rank", [False, True])
def test_residual_after_two_rounds_is_the_sum_of_scaled_products(scales_with_rank: bool) -> None:
    spec = LoRASpec(alpha=4.0, rank=2, alpha_scales_with_rank=scales_with_rank)
    alg = create_algorithm("flora")
    state = alg.server_init(TEMPLATE, CLIENTS, spec, 0)
    g, ref = torch.Generator().manual_seed(2), np.zeros((3, 2))
    for t, weights in enumerate([[20.0, 60.0], [50.0, 10.0]], start=1):
        ups = _uploads(g, weights)
        state = alg.aggregate(state, ups, RoundInfo(t, 0))
        p = np.array(weights) / sum(weights)
        for c in CLIENTS:
            B, A = (ups[c.cid].tensors[k].double().numpy() for k in ("l.lora_B", "l.lora_A"))
            ref += p[c.cid] * _scale(spec, c.rank) * (B @ A)
        assert state.metrics["agg_error"] < 1e-6  # exact: the merged change is the ideal one
        heads = [ups[c.cid].tensors["head.weight"].numpy() for c in CLIENTS]
        assert np.allclose(state.tensors["head.weight"], np.average(heads, 0, weights), atol=1e-6)
    out = alg.export(state)
    assert set(out.factors) == {"head.weight"}  # no adapter: everything is merged
    assert np.allclose(out.residual["l.residual"].numpy(), ref, atol=1e-5)


def test_download_is_the_dense_residual_and_the_head() -> None:
    alg = create_algorithm("flora")
    state = alg.server_init(TEMPLATE, CLIENTS, LoRASpec(alpha=4.0), 0)
    pay = alg.download(state, CLIENTS[1], RoundInfo(1, 0))
    assert set(pay.tensors) == {"l.residual", "head.weight"}
    assert num_bytes(pay.tensors) == 4 * (3 * 2 + 2 * 2)  # 4·d_out·d_in + 4·n_head


def _init(cid: int, rank: int, rnd: int, payload: Payload) -> dict[str, torch.Tensor]:
    spec = LoRASpec(alpha=4.0)
    ctx = ClientContext(
        ClientInfo(cid, rank, 10),
        RoundInfo(rnd, 5),
        payload,
        spec,
        TinySetup(spec, [rank]).train,
        base={"l.base": torch.zeros(3, 2)},
    )
    setup, _ = create_algorithm("flora").client_init(ctx, {})
    assert set(setup.residual) == {"l.residual"}
    assert torch.equal(setup.residual["l.residual"], payload.tensors["l.residual"])
    assert torch.equal(setup.factors["head.weight"], payload.tensors["head.weight"])
    return setup.factors


def test_client_init_is_a_fresh_seeded_lora_over_the_residual() -> None:
    g = torch.Generator().manual_seed(0)
    pay = Payload({"l.residual": torch.randn(3, 2, generator=g), "head.weight": torch.ones(2, 2)})
    a = _init(0, 1, 2, pay)
    assert a["l.lora_A"].shape == (1, 2) and torch.equal(a["l.lora_B"], torch.zeros(3, 1))
    assert _init(1, 2, 2, pay)["l.lora_A"].shape == (2, 2)
    assert torch.equal(_init(0, 1, 2, pay)["l.lora_A"], a["l.lora_A"])  # seeded
    assert not torch.equal(_init(0, 1, 3, pay)["l.lora_A"], a["l.lora_A"])  # fresh each round
    assert not torch.equal(_init(2, 1, 2, pay)["l.lora_A"], a["l.lora_A"])  # and per client


def test_tiny_run_with_mixed_ranks_merges_every_round_exactly(tiny_setup: TinySetup) -> None:
    res = run_rounds("flora", tiny_setup, rounds=2)
    assert {u.tensors["fc1.lora_A"].shape[0] for u in res.uploads[0].values()} == {2, 3, 4}
    ref = np.zeros((8, 6))
    for ups in res.uploads:
        total = sum(u.weight for u in ups.values())
        for u in ups.values():
            r = u.tensors["fc1.lora_A"].shape[0]
            B, A = (u.tensors[k].double().numpy() for k in ("fc1.lora_B", "fc1.lora_A"))
            ref += (u.weight / total) * (tiny_setup.spec.alpha / r) * (B @ A)
    got = create_algorithm("flora").export(res.state).residual["fc1.residual"].double().numpy()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-6
    assert res.state.metrics["agg_error"] < 1e-6
