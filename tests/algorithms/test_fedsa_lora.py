"""Golden math of FedSA-LoRA: A averaged, B and the head kept by each client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinySetup
from conftest import run_rounds
from ilora import config
from ilora.algorithms.base import create_algorithm
from ilora.config import ConfigError
from ilora.engine.simulation import run
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def test_a_is_averaged_with_data_weights() -> None:
    alg = create_algorithm("fedsa-lora")
    clients = [ClientInfo(0, 2, 10), ClientInfo(1, 2, 30)]
    from ilora.lora.spec import LoRASpec

    state = alg.server_init({"l.base": torch.zeros(3, 2)}, clients, LoRASpec(), 0)
    g = torch.Generator().manual_seed(0)
    As = [torch.randn(2, 2, generator=g) for _ in clients]
    ups = {c.cid: Upload({"l.lora_A": As[c.cid]}, float(c.num_examples)) for c in clients}
    new = alg.aggregate(state, ups, RoundInfo(1, 0))
    ref = np.average([a.numpy() for a in As], axis=0, weights=[10, 30])
    assert np.allclose(new.A["l.lora_A"].numpy(), ref, atol=1e-6)
    assert alg.download(new, clients[0], RoundInfo(2, 0)).tensors.keys() == {"l.lora_A"}
    assert "local/l.lora_B" in alg.download(state, clients[0], RoundInfo(1, 0)).tensors


def test_mixed_ranks_average_each_row_over_the_clients_that_own_it() -> None:
    """Row i of Ā is the mean over clients with r_k > i; a row nobody sent keeps its value."""
    from ilora.lora.spec import LoRASpec

    alg = create_algorithm("fedsa-lora")
    clients = [ClientInfo(0, 1, 10), ClientInfo(1, 2, 30), ClientInfo(2, 4, 20)]
    state = alg.server_init({"l.base": torch.zeros(3, 2)}, clients, LoRASpec(), 0)
    old = state.A["l.lora_A"].double().numpy()  # (4, d_in)
    pay = alg.download(state, clients[1], RoundInfo(1, 0)).tensors
    assert pay["l.lora_A"].shape == (2, 2) and pay["local/l.lora_B"].shape == (3, 2)
    g = torch.Generator().manual_seed(1)
    As = {0: torch.randn(1, 2, generator=g), 1: torch.randn(2, 2, generator=g)}
    ups = {c: Upload({"l.lora_A": a}, float(clients[c].num_examples)) for c, a in As.items()}
    new = alg.aggregate(state, ups, RoundInfo(1, 0)).A["l.lora_A"].double().numpy()
    a0, a1 = As[0].double().numpy(), As[1].double().numpy()
    assert np.allclose(new[0], (10 * a0[0] + 30 * a1[0]) / 40, atol=1e-6)
    assert np.allclose(new[1], a1[1], atol=1e-6)  # only client 1 owns row 1
    assert np.array_equal(new[2:], old[2:])  # client 2 was not sampled: rows 2, 3 unchanged


def test_b_and_head_stay_on_the_client(tiny_setup: TinySetup) -> None:
    res = run_rounds("fedsa-lora", tiny_setup, rounds=2)
    for ups in res.uploads:
        assert all(set(u.tensors) == {"fc1.lora_A", "fc2.lora_A"} for u in ups.values())
    b0 = res.cstates[0]["local/fc1.lora_B"]
    b1 = res.cstates[1]["local/fc1.lora_B"]
    assert not torch.equal(b0, b1)  # each client trained its own B
    assert b0.abs().sum() > 0


def test_personalized_evaluation_is_reported_and_required() -> None:
    cfg = config.load(
        SMOKE,
        [
            "algorithm=fedsa-lora",
            "lora.rank_policy=uniform",
            "data.local_test_fraction=0.25",
            "fed.rounds=1",
        ],
    )
    history = run(cfg).history
    assert 0.0 <= history.records[0].metrics["personal_accuracy"] <= 1.0
    assert not np.isnan(history.summary()["final_personal_accuracy"])
    with pytest.raises(ConfigError, match="local_test_fraction"):
        run(config.load(SMOKE, ["algorithm=fedsa-lora", "lora.rank_policy=uniform"]))
