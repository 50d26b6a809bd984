"""The loop's frozen-backbone features (``backbone_feature_batches`` → ``ctx.features``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from conftest import TinyMLP
from conftest import TinySetup
from conftest import tiny_data
from ilora.algorithms.base import Algorithm
from ilora.engine.local import backbone_features
from ilora.engine.local import client_round
from ilora.lora.spec import LoRASpec
from ilora.lora.state import adapted
from ilora.lora.state import load_setup
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

SETUP = TinySetup(LoRASpec(alpha=4.0), [2])
DATA = tiny_data(24, 5)


def _hidden(x: torch.Tensor) -> torch.Tensor:
    """The pretrained MLP's head input, computed by hand."""
    plain = TinyMLP()
    with torch.no_grad():
        return torch.relu(plain.fc2(torch.relu(plain.fc1(x))))  # (N, 8)


def _adapter(g: torch.Generator) -> TensorDict:
    return {
        "fc1.lora_A": torch.randn(2, 6, generator=g),
        "fc1.lora_B": torch.randn(8, 2, generator=g),  # non-zero: the adapter changes outputs
        "fc2.lora_A": torch.randn(2, 8, generator=g),
        "fc2.lora_B": torch.randn(8, 2, generator=g),
    }


def test_features_are_the_head_inputs_of_the_frozen_backbone() -> None:
    model, data = SETUP.model(), tiny_data(21, 4)
    load_setup(model, LocalSetup(_adapter(torch.Generator().manual_seed(0))))
    feats = backbone_features(model, data, 8, 0, 0, 1, 0)  # all data, in order
    assert torch.allclose(feats.inputs, _hidden(data.inputs["x"]), atol=1e-6)
    assert torch.equal(feats.labels, data.labels) and feats.num_classes == 3
    assert all(m.lora_A is None for m in adapted(model).values())  # the caller reinstalls


def test_some_seeded_batches_are_reproducible() -> None:
    model, data = SETUP.model(), tiny_data(40, 2)
    a = backbone_features(model, data, 8, 2, 0, 1, 0)
    b = backbone_features(model, data, 8, 2, 0, 1, 0)
    assert a.inputs.shape == (16, 8) and torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.labels, b.labels)
    c = backbone_features(model, data, 8, 2, 0, 2, 0)  # another round: other batches
    assert not torch.equal(a.labels, c.labels) or not torch.equal(a.inputs, c.inputs)


@dataclass(frozen=True)
class _Probe(Algorithm[None]):
    """Asks for features on an empty client state only and reports what it saw."""

    def backbone_feature_batches(self, ctx: ClientContext, cstate: TensorDict) -> int | None:
        return None if cstate else 0

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        seen = ctx.features
        metrics = {"rows": float(-1 if seen is None else seen.inputs.shape[0])}
        if seen is not None:
            metrics["error"] = float((seen.inputs - _hidden(DATA.inputs["x"])).abs().max())
        return Upload({}, 1.0, metrics), {"seen": torch.ones(1)}


def test_client_round_fills_ctx_features_when_asked() -> None:
    model, client = SETUP.model(), ClientInfo(0, 2, 24)
    pay = Payload(_adapter(torch.Generator().manual_seed(1)))
    args = (model, DATA, pay)
    rest = (client, RoundInfo(1, 0), SETUP.spec, SETUP.train)
    up, cstate = client_round(_Probe(), *args, {}, *rest)
    assert up.metrics["rows"] == 24 and up.metrics["error"] < 1e-6
    up, _ = client_round(_Probe(), *args, cstate, *rest)
    assert up.metrics["rows"] == -1  # not asked: no features
