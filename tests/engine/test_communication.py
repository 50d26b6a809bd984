"""Bytes the engine measures per round equal each algorithm's declared formula (traffic)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import Algorithm
from ilora.algorithms.traffic import formula_of
from ilora.algorithms.traffic import shapes_of
from ilora.bench.comm import run_bytes
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
    "eval.every=3",  # evaluation moves no bytes: evaluated after the last round only
    "eval.personal_every=3",
]


def _hyperparameters(alg: Algorithm[Any]) -> dict[str, Any]:
    return {f.name: getattr(alg, f.name) for f in dataclasses.fields(alg)}  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_registered_algorithm_declares_a_formula(name: str) -> None:
    assert callable(formula_of(ALGORITHMS.get(name)))


def test_a_class_without_a_formula_is_refused_with_the_fix() -> None:
    class Unannounced(Algorithm[None]):
        pass

    with pytest.raises(LookupError, match=r"Unannounced declares no byte formula.*traffic"):
        formula_of(Unannounced)


def check_measured_bytes_equal_the_formula(name: str, extra: tuple[str, ...] = ()) -> None:
    """Run ``name`` for 3 rounds on the smoke task; its bytes per round must meet the formula.

    ``extra``: more config overrides (a variant's hyperparameters).
    """
    mixed = ALGORITHMS.get(name).heterogeneous_ranks
    ranks_override = [] if mixed else ["lora.rank_policy=uniform"]
    cfg = config.load(SMOKE, [f"algorithm={name}", *OVERRIDES, *ranks_override, *extra])
    exp = build(cfg)
    shapes = shapes_of(template(exp.model), cfg.train.train_head)
    ranks = {c.cid: c.rank for c in exp.clients}
    assert (len(set(ranks.values())) > 1) == mixed  # mixed ranks wherever supported
    records = run(cfg, exp=exp).history.records
    alg, fed = exp.algorithm, cfg.fed
    hp, pooled = _hyperparameters(alg), alg.pooled_data
    expected = run_bytes(name, shapes, ranks, fed.fraction, cfg.seed, fed.rounds, pooled, hp)
    assert [(rec.bytes_down, rec.bytes_up) for rec in records] == expected
    assert records[-1].bytes_up > 0


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_measured_bytes_per_round_equal_the_formula(name: str) -> None:
    check_measured_bytes_equal_the_formula(name)


@pytest.mark.parametrize("scope", ["adapters", "head"])
def test_ilora_s_bytes_meet_the_formula_for_each_control_scope(scope: str) -> None:
    check_measured_bytes_equal_the_formula(
        "ilora-s", (f"per_algorithm.ilora-s.control_scope={scope}",)
    )


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
