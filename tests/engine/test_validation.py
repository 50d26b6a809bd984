"""The server's upload checks, norm clipping, seeded faults and the minimum-success policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from conftest import TinySetup
from conftest import run_rounds
from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.engine import faults
from ilora.engine.simulation import RoundFailedError
from ilora.engine.simulation import run
from ilora.engine.validation import check_upload
from ilora.engine.validation import clip_update
from ilora.engine.validation import layer_shapes
from ilora.engine.validation import update_norm
from ilora.lora.state import template
from ilora.types import ClientInfo

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
MODEL = {"fc": (3, 4), "head.weight": (2, 3)}
CLIENT = ClientInfo(0, 2, 10)


def _sent() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "fc.lora_A": torch.randn(2, 4, generator=g),  # (r, d_in)
        "fc.lora_B": torch.randn(3, 2, generator=g),  # (d_out, r)
        "head.weight": torch.randn(2, 3, generator=g),
    }


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithms_honest_uploads_pass(name: str, tiny_setup: TinySetup) -> None:
    res = run_rounds(name, tiny_setup)
    shapes = layer_shapes(template(tiny_setup.model()))
    clients = {c.cid: c for c in res.clients}
    for pays, ups in zip(res.payloads, res.uploads, strict=True):
        for cid, up in ups.items():
            sent = pays[cid].tensors
            assert check_upload(up.tensors, sent, clients[cid], shapes) is None, cid


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda u: {**u, "fc.lora_A": u["fc.lora_A"] * float("nan")}, "non-finite values in fc"),
        (lambda u: {**u, "fc.lora_A": torch.zeros(3, 4)}, "fc.lora_A has shape [3, 4]"),
        (lambda u: {**u, "fc.lora_B": torch.zeros(4, 2)}, "fc.lora_B has shape [4, 2]"),
        (lambda u: {**u, "head.bias": torch.zeros(2)}, "head.bias: unknown head tensor"),
        (lambda u: {**u, "conv.lora_A": torch.zeros(2, 4)}, "conv.lora_A: no adapted layer 'conv'"),
        (lambda u: {**u, "fc.lora_C": torch.zeros(3, 3)}, "fc.lora_C has shape [3, 3], not valid"),
    ],
)
def test_bad_uploads_are_rejected_with_a_reason(change: object, reason: str) -> None:
    upload = change(_sent())  # type: ignore[operator]
    got = check_upload(upload, _sent(), CLIENT, MODEL)
    assert got is not None and got.startswith(reason), got


def test_a_factor_may_come_back_at_a_smaller_rank_but_not_a_larger_one() -> None:
    sent = _sent()
    pruned = {**sent, "fc.lora_A": sent["fc.lora_A"][:1], "fc.lora_B": sent["fc.lora_B"][:, :1]}
    assert check_upload(pruned, sent, CLIENT, MODEL) is None
    bigger = {**sent, "fc.lora_A": torch.zeros(3, 4)}
    assert check_upload(bigger, sent, CLIENT, MODEL) is not None


def test_norm_bound_and_clipping_act_on_the_update_not_the_tensor() -> None:
    sent = _sent()
    step = {k: torch.full_like(v, 0.5) for k, v in sent.items()}
    upload = {k: sent[k] + step[k] for k in sent}
    n = float(np.sqrt(sum(0.25 * v.numel() for v in sent.values())))  # ‖step‖
    assert update_norm(upload, sent) == pytest.approx(n)
    assert check_upload(upload, sent, CLIENT, MODEL, max_norm=n * 1.01) is None
    assert "exceeds fed.max_update_norm" in str(check_upload(upload, sent, CLIENT, MODEL, n / 2))
    clipped = clip_update(upload, sent, n / 4)
    assert update_norm(clipped, sent) == pytest.approx(n / 4, rel=1e-6)
    for k in sent:  # the direction is kept
        assert torch.allclose(clipped[k] - sent[k], step[k] / 4, atol=1e-6)
    assert clip_update(upload, sent, 10 * n) == upload


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(["fc.lora_A", "fc.lora_B", "head.weight", "x/extra", "fc.residual"]),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    value=st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_fuzzed_uploads_give_a_verdict_never_a_crash(
    key: str, shape: list[int], value: float
) -> None:
    upload = {**_sent(), key: torch.full(shape, value)}
    verdict = check_upload(upload, _sent(), CLIENT, MODEL, max_norm=100.0)
    assert verdict is None or isinstance(verdict, str)


def test_fault_draws_are_seeded_and_follow_the_probabilities() -> None:
    cfg = config.FaultConfig(nan=0.2, straggler=0.3)
    draws = [faults.draw(cfg, 0, r, c) for r in range(1, 101) for c in range(20)]
    assert draws == [faults.draw(cfg, 0, r, c) for r in range(1, 101) for c in range(20)]
    assert abs(draws.count("nan") / len(draws) - 0.2) < 0.03
    assert abs(draws.count("straggler") / len(draws) - 0.3) < 0.03
    assert set(draws) == {None, "nan", "straggler"}


def test_injected_faults_are_rejected_or_lost_and_counted(tmp_path: Path) -> None:
    overrides = [
        "fed.rounds=6",
        "data.num_clients=10",
        "train.steps=2",
        "fed.max_update_norm=1000",
        "faults.dropout_before=0.1",
        "faults.crash=0.05",
        "faults.straggler=0.05",
        "faults.nan=0.1",
        "faults.wrong_keys=0.05",
        "faults.wrong_shape=0.05",
        "faults.exploding=0.1",
        "eval.every=6",  # the checks read the events and counts, which evaluation does not touch
        "eval.personal_every=6",
    ]
    cfg = config.load(SMOKE, overrides)
    history = run(cfg).history
    events = [e for r in history.records for e in r.events]
    lost = {"dropout_before", "crash", "straggler"}
    assert {e["reason"] for e in events if e["outcome"] == "failed"} <= lost
    rejected = [e for e in events if e["outcome"] == "rejected"]
    assert {e["fault"] for e in rejected} <= {"nan", "wrong_keys", "wrong_shape", "exploding"}
    assert len({e["fault"] for e in rejected}) >= 3  # the seed hits several kinds
    drawn = [
        faults.draw(cfg.faults, cfg.seed, r.round, cid)
        for r in history.records
        for cid in range(cfg.data.num_clients)
    ]
    assert len(events) == sum(d is not None for d in drawn)  # every fault is accounted for
    for r in history.records:
        c = r.clients
        assert c["succeeded"] + c["failed"] + c["rejected"] == c["sampled"]
    summary = history.summary()
    assert summary["rejected_updates"] == len(rejected)
    assert json.dumps(history.records[0].to_json())  # events serialize


def test_too_few_accepted_updates_stop_the_run_loudly() -> None:
    cfg = config.load(SMOKE, ["faults.nan=1.0", "fed.min_success=1"])
    with pytest.raises(RoundFailedError, match="round 1: 0 of 4 sampled clients"):
        run(cfg)


def test_clipping_tames_a_byzantine_client() -> None:
    rounds = ["fed.rounds=3", "eval.every=3", "eval.personal_every=3"]  # final metrics only
    base = [*rounds, "faults.scale=0.25", "faults.scale_factor=1000"]
    wild = run(config.load(SMOKE, base)).history.summary()["final_loss"]
    tamed = run(config.load(SMOKE, [*base, "fed.clip_update_norm=1.0"])).history.summary()
    clean = run(config.load(SMOKE, rounds)).history.summary()
    assert not np.isfinite(wild) or wild > 2 * clean["final_loss"]
    assert tamed["final_loss"] < wild or not np.isfinite(wild)
    assert abs(tamed["final_accuracy"] - clean["final_accuracy"]) < 0.15


def test_the_cli_exits_non_zero_with_the_reason_when_a_round_fails(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ilora.cli import app

    args = ["run", str(SMOKE), "--set", "faults.wrong_shape=1.0", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "run failed: round 1: 0 of 4 sampled clients" in text and "has shape" in text
    assert "Traceback" not in result.output


def test_min_success_zero_keeps_the_model_through_a_round_without_accepted_updates() -> None:
    from ilora.engine.setup import build

    cfg = config.load(SMOKE, ["faults.nan=1.0", "fed.min_success=0"])
    result = run(cfg)
    for rec in result.history.records:
        assert rec.clients["succeeded"] == 0 and rec.clients["rejected"] == 4
        assert "train_loss" not in rec.metrics and "accuracy" in rec.metrics
    exp = build(cfg)
    start = exp.algorithm.export(
        exp.algorithm.server_init(template(exp.model), exp.clients, cfg.lora, cfg.seed)
    )
    assert result.setup.factors.keys() == start.factors.keys()
    assert all(torch.equal(result.setup.factors[k], v) for k, v in start.factors.items())
