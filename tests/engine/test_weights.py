"""The server checks the aggregation weight a client reports (issue 17, attack 3).

On main a client reporting weight 1e6 dominated the aggregate even under uniform weighting,
NaN passed the tensor checks and poisoned the model, and −3 crashed the server.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ilora import config
from ilora.engine.turn import server_check
from ilora.engine.validation import check_weight
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import Upload

CLIENT = ClientInfo(0, 2, 40)  # announced 40 examples when it joined
CFG = config.load("configs/smoke.yaml", ["fed.weighting=examples"])


@pytest.mark.parametrize(
    ("weight", "max_weight", "reason"),
    [
        (1e6, 0.0, "exceeds the 40 examples the client announced"),
        (math.nan, 0.0, "not finite"),
        (math.inf, 0.0, "not finite"),
        (-3.0, 0.0, "not positive"),
        (0.0, 0.0, "not positive"),
        (30.0, 20.0, "exceeds fed.max_weight 20"),
        (40.0, 0.0, None),
        (20.0, 20.0, None),
    ],
)
def test_reported_weights_are_checked(weight: float, max_weight: float, reason: str | None) -> None:
    got = check_weight(weight, CLIENT, max_weight)
    assert got is None if reason is None else reason in str(got)


def _check(cfg: config.ExperimentConfig, weight: float) -> tuple[Upload | None, object]:
    sent = {"head.weight": torch.zeros(2, 3)}
    upload = Upload({"head.weight": torch.ones(2, 3)}, weight, {"train_loss": 1.0})
    return server_check(cfg, upload, Payload(sent), CLIENT, {"head.weight": (2, 3)})


@pytest.mark.parametrize("weight", [1e6, math.nan, -3.0])
def test_a_lying_weight_is_rejected_and_counted_under_example_weighting(weight: float) -> None:
    accepted, event = _check(CFG, weight)
    assert accepted is None
    assert isinstance(event, dict) and event["outcome"] == "rejected" and event["cid"] == 0
    assert "aggregation weight" in event["reason"]


@pytest.mark.parametrize("weight", [1e6, math.nan, -3.0])
def test_uniform_weighting_ignores_the_reported_weight(weight: float) -> None:
    uniform = replace(CFG, fed=replace(CFG.fed, weighting="uniform"))
    accepted, event = _check(uniform, weight)
    assert event is None and accepted is not None and accepted.weight == 1.0


def test_max_weight_must_be_a_finite_non_negative_number() -> None:
    with pytest.raises(config.ConfigError, match="fed.max_weight must be a finite number"):
        config.load("configs/smoke.yaml", ["fed.max_weight=-1"])
