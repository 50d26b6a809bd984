"""Parity: every registered algorithm gives the same global state on Flower as embedded.

The Flower side is the real ``AlgorithmStrategy`` and ``ClientApp`` exchanging real Flower
messages through ``LocalGrid`` (in-process delivery, one ``Context`` per node); the embedded
side is ``ilora.engine.simulation.run``. Two rounds, mixed ranks (2 and 4), a personal test
share per client so that personalized metrics are compared too. The edge cases of the round
step (an empty round, faults, DP, robust aggregation, screening, divergence) compare the whole
history and the server state, bit for bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

import ilora.algorithms  # noqa: F401
from ilora import config as config_mod
from ilora.algorithms.base import ALGORITHMS
from ilora.engine.outputs import save_adapter
from ilora.engine.setup import build
from ilora.engine.simulation import DivergenceError
from ilora.engine.simulation import RoundFailedError
from ilora.engine.simulation import run
from ilora.flower import codec
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.strategy import AlgorithmStrategy
from ilora.flower.strategy import HandshakeError

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


def _equal(a: Any, b: Any) -> bool:
    """Return True if two server states are equal, tensors bit for bit (dtype included)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and sorted(a) == sorted(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same_run(
    cfg: config_mod.ExperimentConfig, reproducible_noise: bool = False
) -> list[dict[str, object]]:
    """Run ``cfg`` both ways, assert the history and the server state equal, return the history.

    ``reproducible_noise`` starts the nodes configured for the test-only DP noise.
    """
    extra = {"dp-reproducible-noise": True} if reproducible_noise else {}
    nodes = [{"partition-id": i, **extra} for i in range(cfg.data.num_clients)]
    embedded, flower = run(cfg, exp=build(cfg)), _flower(cfg, nodes)
    assert _history(embedded) == _history(flower)
    assert embedded.history.final == flower.history.final
    assert _equal(embedded.state, flower.state)
    return _history(flower)


@pytest.mark.slow  # two full runs per algorithm; make test-fast keeps the other parity tests
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


def test_a_centred_head_trains_and_is_saved_the_same_on_flower(tmp_path: Path) -> None:
    """``train.center_head``: the same centre, run and folded adapter file on both runtimes."""
    cfg = _cfg("fedit", "train.center_head=64")
    embedded, flower = run(cfg, exp=build(cfg)), _flower(cfg)
    assert _history(embedded) == _history(flower)
    assert embedded.head_center is not None and _equal(embedded.head_center, flower.head_center)
    saved = []
    for name, result in (("embedded", embedded), ("flower", flower)):
        save_adapter(result.setup, cfg, tmp_path / name, result.head_center)
        saved.append((tmp_path / name / "adapter_model.safetensors").read_bytes())
    assert saved[0] == saved[1]


def test_injected_faults_count_the_same_on_flower() -> None:
    cfg = _cfg("fedit", "faults.crash=0.2", "faults.nan=0.2", "fed.rounds=3", "seed=3")
    flower = _same_run(cfg)
    assert sum(r["clients"]["failed"] + r["clients"]["rejected"] for r in flower) > 0
    for r in flower:  # the counts per fault kind, over the round's sample, on both runtimes
        assert _injected(r) == r["clients"]["sampled"]  # type: ignore[index]


def _injected(record: dict[str, Any]) -> int:
    """Return how many faults (honest included) a round record counts over its sample."""
    return sum(counts[0] for counts in record["faults"].values())


def test_private_sampling_names_no_client_on_either_runtime() -> None:
    """Under DP noise the sample is secret: records keep counts, never a client id."""
    dp = ["dp.clip_norm=0.5", "dp.noise_multiplier=1.0", "fed.weighting=uniform"]
    faults = ["faults.crash=0.3", "faults.nan=0.3", "fed.min_success=0"]
    cfg = _cfg("fedit", *dp, *faults, "fed.fraction=0.5")
    for result in (run(cfg, exp=build(cfg)), _flower(cfg)):
        records = _history(result)
        assert any(r["events"] for r in records)
        assert all("cid" not in e for r in records for e in r["events"])  # type: ignore[attr-defined]
        assert all(_injected(r) == r["clients"]["sampled"] == 2 for r in records)  # type: ignore[index]


def test_a_round_without_uploads_keeps_the_model_on_both_runtimes() -> None:
    cfg = _cfg("ilora", "faults.crash=0.5", "fed.min_success=0", "fed.rounds=3", "seed=0")
    flower = _same_run(cfg)
    assert [r["clients"]["succeeded"] for r in flower] == [4, 0, 1]
    assert "train_loss" not in flower[1] and "agg_error" not in flower[1]
    assert "personal_accuracy" in flower[1] and "download_error" in flower[1]


def test_dp_runs_record_the_same_epsilon_on_flower() -> None:
    dp = ["dp.clip_norm=0.5", "dp.noise_multiplier=1.0", "fed.weighting=uniform"]
    dp.append("dp.reproducible_noise=true")  # the test-only seeded noise: runs comparable
    flower = _same_run(_cfg("fedit", *dp), reproducible_noise=True)
    eps = [r["epsilon"] for r in flower]
    assert 0 < eps[0] < eps[1]  # type: ignore[operator]
    assert all("agg_error" not in r for r in flower)  # ΔW_k would bypass the noise: not sent


@pytest.mark.parametrize("statistic", ["median", "trimmed_mean"])
def test_robust_aggregation_applies_on_flower_too(statistic: str) -> None:
    robust = [f"fed.robust={statistic}", "fed.trim_fraction=0.25", "faults.sign_flip=0.3"]
    cfg, plain = _cfg("fedit", *robust), _cfg("fedit", "faults.sign_flip=0.3")
    _same_run(cfg)
    flower = _flower(cfg).setup.factors
    unrobust = run(plain, exp=build(plain)).setup.factors
    assert any(not torch.equal(v, unrobust[k]) for k, v in flower.items())


def test_direction_screen_rejects_the_same_updates_on_flower() -> None:
    screen = ["faults.sign_flip=0.3", "fed.min_cosine=0", "data.partition=iid"]
    flower = _same_run(_cfg("ilora", *screen, "data.partition_args={}", "fed.rounds=3"))
    assert any("fed.min_cosine" in e["reason"] for r in flower for e in r["events"])  # type: ignore[attr-defined]


def test_divergence_is_recorded_and_stops_the_run_the_same_way(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = _cfg("ilora", "train.head_lr=3", "fed.rounds=3")
    flower = _same_run(cfg)
    assert any(r.get("diverged") == 1.0 for r in flower)
    warning = capsys.readouterr().err
    assert "ilora diverged in round 1" in warning and "lower train.lr" in warning
    assert "orthonormal B" in warning and warning.count("diverged in round") == 2  # once a run
    stop = _cfg("ilora", "train.head_lr=3", "fed.rounds=3", "fed.stop_on_divergence=true")
    reasons = []
    for runner in (lambda c: run(c, exp=build(c)), _flower):
        with pytest.raises(DivergenceError) as err:
            runner(stop)
        reasons.append(str(err.value))
    assert reasons[0] == reasons[1] and "no checkpoint was written yet" in reasons[0]


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
