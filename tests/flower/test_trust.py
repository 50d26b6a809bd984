"""The Flower server trusts no client's weight; a client trusts no server-chosen DP noise."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import Context
from flwr.app import Message
from flwr.clientapp import ClientApp

from ilora import config as config_mod
from ilora.engine.setup import build
from ilora.engine.simulation import RunResult
from ilora.flower import codec
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.strategy import AlgorithmStrategy
from ilora.flower.strategy import HandshakeError

BASE = ["algorithm=fedit", "fed.rounds=2", "eval.final_full=false"]
LIES = {1: 1e6, 2: math.nan, 3: -3.0}  # partition-id -> the weight it reports


class LyingWeights(ClientApp):
    """Clients 1, 2, 3 report the weights of ``LIES`` with otherwise honest uploads."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = make_client_app()

    def __call__(self, message: Message, context: Context) -> Message:
        reply = self.inner(message, context)
        cid = int(context.node_config["partition-id"])  # type: ignore[arg-type]
        if message.metadata.message_type == "train" and cid in LIES:
            reply.content.metric_records["metrics"][codec.WEIGHT] = LIES[cid]
        return reply


def _run(app: ClientApp, overrides: list[str], node: dict[str, object] | None = None) -> RunResult:
    cfg = config_mod.load("configs/smoke.yaml", [*BASE, *overrides])
    nodes = [{"partition-id": i, **(node or {})} for i in range(cfg.data.num_clients)]
    grid = LocalGrid(app, nodes)  # type: ignore[arg-type]
    exp = build(codec.config_from_text(codec.config_to_text(cfg)))
    return AlgorithmStrategy(exp, timeout=30).run(grid)


def test_weights_of_1e6_nan_and_minus_3_are_rejected_and_counted() -> None:
    result = _run(LyingWeights(), ["fed.weighting=examples"])
    for record in result.history.records:
        assert record.clients["succeeded"] == 1 and record.clients["rejected"] == 3
        reasons = {e["cid"]: str(e["reason"]) for e in record.events}
        assert sorted(reasons) == [1, 2, 3]
        assert "exceeds the" in reasons[1] and "not finite" in reasons[2]
        assert "not positive" in reasons[3]
    assert all(bool(torch.isfinite(t).all()) for t in result.setup.factors.values())


def test_uniform_weighting_ignores_reported_weights_bitwise() -> None:
    lied = _run(LyingWeights(), ["fed.weighting=uniform"])
    honest = _run(make_client_app(), ["fed.weighting=uniform"])
    assert all(r.clients["succeeded"] == 4 for r in lied.history.records)
    for key, value in honest.setup.factors.items():
        assert torch.equal(lied.setup.factors[key], value), key


DP = ["fed.weighting=uniform", "dp.clip_norm=0.1", "dp.noise_multiplier=1"]


def test_a_client_refuses_reproducible_noise_the_server_asks_for() -> None:
    with (
        pytest.warns(UserWarning, match="reproducible_noise"),
        pytest.raises(HandshakeError, match="refused the handshake.*dp-reproducible-noise"),
    ):
        _run(make_client_app(), [*DP, "dp.reproducible_noise=true", "fed.rounds=1"])


def test_a_node_configured_for_tests_accepts_reproducible_noise() -> None:
    overrides = [*DP, "dp.reproducible_noise=true", "fed.rounds=1"]
    with pytest.warns(UserWarning, match="reproducible_noise"):
        result = _run(make_client_app(), overrides, {"dp-reproducible-noise": True})
    assert result.history.records[0].clients["succeeded"] == 4
