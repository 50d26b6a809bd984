"""ILoRA's ``init: lora`` ablation: standard LoRA init (B = 0, PEFT's A) with the rest ILoRA's."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ilora import config
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.ilora import ILoRA
from ilora.algorithms.traffic import shapes_of
from ilora.bench.comm import run_bytes
from ilora.bench.protocol import Variant
from ilora.config import TrainConfig
from ilora.engine.setup import build
from ilora.engine.setup import validate
from ilora.engine.simulation import run
from ilora.lora.inject import inject
from ilora.lora.spec import LoRASpec
from ilora.lora.state import base_weights
from ilora.lora.state import template
from ilora.seeding import generator
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import RoundInfo

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
SPEC = LoRASpec(alpha=8.0)
D_IN, D_OUT, R_MAX, SEED = 256, 32, 16, 7


class Wide(nn.Module):
    """x (B, 256) -> fc (32) -> classifier (3): a fan-in wide enough to see A's distribution."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.classifier = nn.Linear(D_IN, D_OUT), nn.Linear(D_OUT, 3)
        g = generator(0, "wide")
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(torch.relu(self.fc(x)))
        return out


def _model() -> nn.Module:
    model = Wide()
    inject(model, SPEC, [r"^fc$"], head=[r"^classifier\."])
    return model


_BASE = base_weights(_model())


def _peft_a(rows: int, seed: int) -> torch.Tensor:
    """PEFT's default A: ``kaiming_uniform_(a=sqrt(5))``, drawn from the run seed's generator."""
    A = torch.empty(rows, D_IN)
    nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator(seed, "lora-init", "fc"))
    return A


def _clients() -> list[ClientInfo]:
    return [ClientInfo(i, r, 10 + i) for i, r in enumerate([4, R_MAX, 8])]


def test_the_initial_a_is_pefts_kaiming_uniform_and_b_is_zero_at_r_max() -> None:
    model = _model()
    state = create_algorithm("ilora", {"init": "lora"}).server_init(
        template(model), _clients(), SPEC, SEED
    )
    A, B = state.init["fc.lora_A"], state.init["fc.lora_B"]
    assert A.shape == (R_MAX, D_IN) and B.shape == (D_OUT, R_MAX)
    assert torch.equal(B, torch.zeros(D_OUT, R_MAX))
    bound = math.sqrt(2 / (1 + 5)) * math.sqrt(3 / D_IN)  # gain(a=√5)·√(3/fan_in) = 1/√fan_in
    assert float(A.abs().max()) <= bound and float(A.abs().max()) > 0.99 * bound
    assert abs(float(A.var()) / (bound**2 / 3) - 1) < 0.1  # uniform on [-b, b]
    assert torch.equal(A, _peft_a(R_MAX, SEED))
    fedit = create_algorithm("fedit", {}).server_init(template(model), _clients(), SPEC, SEED)
    assert torch.equal(A, fedit.tensors["fc.lora_A"])  # a seed gives FedIT's A


def _start(alg: Algorithm[Any], state: Any, client: ClientInfo, seed: int) -> LocalSetup:
    """Return the setup a client builds from its round-1 download, the run seed ``seed``."""
    rnd = RoundInfo(1, seed)
    train = TrainConfig(steps=1, batch_size=4)
    ctx = ClientContext(client, rnd, alg.download(state, client, rnd), SPEC, train, _BASE)
    return alg.client_init(ctx, {})[0]


@pytest.mark.parametrize("fold_scaling", [True, False])
@pytest.mark.parametrize("rank", [4, 8, R_MAX])
def test_a_client_starts_from_the_leading_rows_of_a_and_a_zero_b(
    rank: int, fold_scaling: bool
) -> None:
    alg = create_algorithm("ilora", {"init": "lora", "fold_scaling": fold_scaling})
    clients = _clients()
    state = alg.server_init(template(_model()), clients, SPEC, SEED)
    client = next(c for c in clients if c.rank == rank)
    setup = _start(alg, state, client, SEED)
    # the global A at the global scale s(r_max), which the client applies with its own s(r_k)
    scale = SPEC.scale(R_MAX) / SPEC.scale(rank) if fold_scaling else 1.0
    assert torch.allclose(setup.factors["fc.lora_A"], scale * _peft_a(R_MAX, SEED)[:rank])
    assert torch.equal(setup.factors["fc.lora_B"], torch.zeros(D_OUT, rank))
    assert torch.equal(setup.residual["fc.residual"], torch.zeros(D_OUT, D_IN))  # no offset
    # the client draws A from the run seed: another seed, another A (the server's is SEED's)
    other = _start(alg, state, client, SEED + 1)
    assert not torch.allclose(other.factors["fc.lora_A"], setup.factors["fc.lora_A"])


def test_the_protocol_variant_loads_into_a_valid_config() -> None:
    overrides = Variant.parse("ilora+init=lora").overrides()
    alg, _ = validate(config.load(SMOKE, list(overrides)))
    assert isinstance(alg, ILoRA) and alg.init == "lora"
    bad = Variant.parse("ilora+init=svd").overrides()
    with pytest.raises(config.ConfigError, match="init must be one of"):
        validate(config.load(SMOKE, list(bad)))


def test_a_smoke_run_with_lora_init_trains_and_its_bytes_meet_the_formula() -> None:
    cfg = config.load(SMOKE, ["fed.fraction=0.5", "per_algorithm.ilora.init=lora"])
    exp = build(cfg)
    assert isinstance(exp.algorithm, ILoRA) and exp.algorithm.init == "lora"
    records = run(cfg, exp=exp).history.records
    assert all(math.isfinite(r.metrics["accuracy"]) for r in records)
    shapes = shapes_of(template(exp.model), cfg.train.train_head)
    ranks = {c.cid: c.rank for c in exp.clients}
    hp = {f.name: getattr(exp.algorithm, f.name) for f in dataclasses.fields(exp.algorithm)}
    fed = cfg.fed
    expected = run_bytes("ilora", shapes, ranks, fed.fraction, cfg.seed, fed.rounds, False, hp)
    assert [(r.bytes_down, r.bytes_up) for r in records] == expected
