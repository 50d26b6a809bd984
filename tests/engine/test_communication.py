"""Bytes the engine measures per round equal each algorithm's analytic formula (bench.comm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.bench.comm import FORMULAS, run_bytes, shapes_of
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.lora.state import template

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
OVERRIDES = [
    "fed.rounds=3",
    "fed.fraction=0.5",  # 2 of 4 clients: some clients join late (first-contact traffic)
    "data.local_test_fraction=0.25",  # personalized methods need test shares
    "train.steps=2",
    "per_algorithm.hetlora.prune_threshold=0.0",  # no self-pruning: uploads stay at r_k
]


def test_every_registered_algorithm_has_a_formula() -> None:
    assert sorted(FORMULAS) == sorted(ALGORITHMS.names())


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_measured_bytes_per_round_equal_the_formula(name: str) -> None:
    mixed = ALGORITHMS.get(name).heterogeneous_ranks
    ranks_override = [] if mixed else ["lora.rank_policy=uniform"]
    cfg = config.load(SMOKE, [f"algorithm={name}", *OVERRIDES, *ranks_override])
    exp = build(cfg)
    shapes = shapes_of(template(exp.model), cfg.train.train_head)
    ranks = {c.cid: c.rank for c in exp.clients}
    assert (len(set(ranks.values())) > 1) == mixed  # mixed ranks wherever supported
    records = run(cfg, exp=exp).history.records
    expected = run_bytes(
        name, shapes, ranks, cfg.fed.fraction, cfg.seed, cfg.fed.rounds, exp.algorithm.pooled_data
    )
    assert [(rec.bytes_down, rec.bytes_up) for rec in records] == expected
    assert records[-1].bytes_up > 0


def test_hetlora_uploads_shrink_when_clients_prune_and_the_reported_rank_accounts_for_it() -> None:
    cfg = config.load(
        SMOKE, ["algorithm=hetlora", *OVERRIDES[:4], "per_algorithm.hetlora.prune_threshold=0.99"]
    )
    exp = build(cfg)
    shapes = shapes_of(template(exp.model), cfg.train.train_head)
    ranks = {c.cid: c.rank for c in exp.clients}
    records = run(cfg, exp=exp).history.records
    at_rank = run_bytes("hetlora", shapes, ranks, cfg.fed.fraction, cfg.seed, cfg.fed.rounds)
    reported = [dict(r.metrics) for r in records]
    exact = run_bytes(
        "hetlora", shapes, ranks, cfg.fed.fraction, cfg.seed, cfg.fed.rounds, round_hp=reported
    )
    assert any(rec.bytes_up < up for rec, (_, up) in zip(records, at_rank, strict=True))
    for rec, (down, up) in zip(records, exact, strict=True):
        assert rec.bytes_down == down and rec.bytes_up == pytest.approx(up, rel=1e-12)
