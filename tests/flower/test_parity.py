"""Parity: every registered algorithm gives the same global state on Flower as embedded.

The Flower side is the real ``AlgorithmStrategy`` and ``ClientApp`` exchanging real Flower
messages through ``LocalGrid`` (in-process delivery, one ``Context`` per node); the embedded
side is ``ilora.engine.simulation.run``. Two rounds, mixed ranks (2 and 4), a personal test
share per client so that personalized metrics are compared too.
"""

from __future__ import annotations

import pytest
import torch

import ilora.algorithms  # noqa: F401
from ilora import config as config_mod
from ilora.algorithms.base import ALGORITHMS
from ilora.engine.setup import build
from ilora.engine.simulation import RoundFailedError, run
from ilora.flower import codec
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.strategy import AlgorithmStrategy, HandshakeError

OVERRIDES = ["data.local_test_fraction=0.2", "eval.subset=0", "fed.rounds=2"]


def _cfg(name: str, *extra: str) -> config_mod.ExperimentConfig:
    return config_mod.load("configs/smoke.yaml", [f"algorithm={name}", *OVERRIDES, *extra])


def _flower(cfg: config_mod.ExperimentConfig, nodes: list[dict[str, int]] | None = None):  # type: ignore[no-untyped-def]
    nodes = nodes or [{"partition-id": i} for i in range(cfg.data.num_clients)]
    grid = LocalGrid(make_client_app(), nodes)
    return AlgorithmStrategy(build(codec.config_from_text(codec.config_to_text(cfg)))).run(grid)


def _history(result) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    records = [r.to_json() for r in result.history.records]
    for r in records:
        r.pop("wall_s")
    return records


@pytest.mark.parametrize(
    ("name", "precision"),
    [*((n, "fp32") for n in ALGORITHMS.names()), ("ilora", "bf16"), ("ilora-s", "bf16")],
)
def test_flower_equals_embedded(name: str, precision: str) -> None:
    cfg = _cfg(name, f"train.precision={precision}")
    assert len(set(cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed))) > 1  # mixed ranks
    embedded, flower = run(cfg, exp=build(cfg)), _flower(cfg)
    for part in ("factors", "residual"):
        a, b = getattr(embedded.setup, part), getattr(flower.setup, part)
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert _history(embedded) == _history(flower)  # bytes, counts, every metric
    assert embedded.history.final == flower.history.final


def test_injected_faults_count_the_same_on_flower() -> None:
    cfg = _cfg("fedit", "faults.crash=0.2", "faults.nan=0.2", "fed.rounds=3", "seed=3")
    embedded, flower = _history(run(cfg, exp=build(cfg))), _history(_flower(cfg))
    assert [r["clients"] for r in embedded] == [r["clients"] for r in flower]
    assert [r["events"] for r in embedded] == [r["events"] for r in flower]
    assert sum(r["clients"]["failed"] + r["clients"]["rejected"] for r in flower) > 0


@pytest.mark.parametrize("statistic", ["median", "trimmed_mean"])
def test_robust_aggregation_applies_on_flower_too(statistic: str) -> None:
    robust = [f"fed.robust={statistic}", "fed.trim_fraction=0.25", "faults.sign_flip=0.3"]
    cfg, plain = _cfg("fedit", *robust), _cfg("fedit", "faults.sign_flip=0.3")
    embedded, flower = run(cfg, exp=build(cfg)), _flower(cfg)
    for key, value in embedded.setup.factors.items():
        assert torch.equal(value, flower.setup.factors[key]), key
    unrobust = run(plain, exp=build(plain)).setup.factors
    assert any(not torch.equal(v, unrobust[k]) for k, v in flower.setup.factors.items())


def test_direction_screen_rejects_the_same_updates_on_flower() -> None:
    screen = ["faults.sign_flip=0.3", "fed.min_cosine=0", "data.partition=iid"]
    cfg = _cfg("ilora", *screen, "data.partition_args={}", "fed.rounds=3")
    embedded, flower = _history(run(cfg, exp=build(cfg))), _history(_flower(cfg))
    assert [r["events"] for r in embedded] == [r["events"] for r in flower]
    assert any("fed.min_cosine" in e["reason"] for r in flower for e in r["events"])


def test_too_few_successes_fail_the_run_loudly() -> None:
    cfg = _cfg("fedit", "faults.crash=1.0")
    with pytest.raises(RoundFailedError, match="min_success"):
        _flower(cfg)


def test_handshake_names_a_missing_or_duplicated_partition() -> None:
    cfg = _cfg("fedit")
    with pytest.raises(HandshakeError, match=r"client\(s\) \[3\]"):
        _flower(cfg, [{"partition-id": i} for i in range(3)])
    with pytest.raises(HandshakeError, match="both hold partition-id 1"):
        _flower(cfg, [{"partition-id": i} for i in (0, 1, 1, 2, 3)])


def test_flowers_own_start_loop_reaches_the_same_global_model() -> None:
    from flwr.app import ArrayRecord

    cfg = _cfg("flora")  # a dense residual as well as factors
    embedded = run(cfg, exp=build(cfg))
    grid = LocalGrid(make_client_app(), [{"partition-id": i} for i in range(4)])
    strategy = AlgorithmStrategy(build(codec.config_from_text(codec.config_to_text(cfg))))
    result = strategy.start(grid, ArrayRecord(), num_rounds=cfg.fed.rounds)
    got = codec.from_arrays(result.arrays)
    want = {**embedded.setup.factors, **embedded.setup.residual}
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
