"""Bytes the engine measures per round equal each algorithm's analytic formula (bench.comm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.bench.comm import FORMULAS, Shapes, round_bytes
from ilora.engine.sampling import sample_clients
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.lora import keys
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
    cfg = config.load(SMOKE, [f"algorithm={name}", *OVERRIDES])
    exp = build(cfg)
    base = keys.of_kind(template(exp.model), "base")
    head = keys.of_kind(template(exp.model), "param") if cfg.train.train_head else {}
    shapes = Shapes(
        [tuple(t.shape) for t in base.values()],  # type: ignore[misc]
        sum(t.numel() for t in head.values()),
    )
    if exp.algorithm.pooled_data:  # one client with all the data at the largest rank
        ranks, cids, fraction = {0: max(c.rank for c in exp.clients)}, [0], 1.0
    else:
        ranks = {c.cid: c.rank for c in exp.clients}
        cids, fraction = sorted(ranks), cfg.fed.fraction
    assert len(set(ranks.values())) > 1 or exp.algorithm.pooled_data  # mixed ranks
    records = run(cfg, exp=exp).history.records
    seen: set[int] = set()
    for rec in records:
        sampled = sample_clients(cids, fraction, cfg.seed, rec.round)
        down, up = round_bytes(name, shapes, ranks, sampled, rec.round, seen)
        assert (rec.bytes_down, rec.bytes_up) == (down, up), f"round {rec.round}"
    assert records[-1].bytes_up > 0
