"""Golden math of FedSA-LoRA: A averaged, B and the head kept by each client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinySetup, run_rounds
from ilora import config
from ilora.algorithms.base import create_algorithm
from ilora.config import ConfigError
from ilora.engine.simulation import run
from ilora.types import ClientInfo, RoundInfo, Upload

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
