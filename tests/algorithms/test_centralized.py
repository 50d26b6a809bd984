"""Centralized: one pooled client; the server keeps exactly what it trained."""

from __future__ import annotations

import pytest
import torch

from ilora.algorithms.base import create_algorithm
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload


def test_keeps_the_single_pooled_upload() -> None:
    alg = create_algorithm("centralized")
    assert alg.pooled_data
    state = alg.server_init({"l.base": torch.zeros(3, 4)}, [ClientInfo(0, 2, 100)], LoRASpec(), 0)
    up = Upload({"l.lora_A": torch.ones(2, 4), "l.lora_B": torch.ones(3, 2)}, 100.0)
    new = alg.aggregate(state, {0: up}, RoundInfo(1, 0))
    assert torch.equal(new.tensors["l.lora_A"], up.tensors["l.lora_A"])
    with pytest.raises(ValueError, match="exactly one"):
        alg.aggregate(state, {0: up, 1: up}, RoundInfo(1, 0))
