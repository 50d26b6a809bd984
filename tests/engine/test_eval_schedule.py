"""The evaluation schedule (``eval.every``, ``eval.personal_every``) never changes what is trained.

Evaluating personalized models runs every client's ``client_init``; a method that drew random
numbers there, or left state behind, would train differently when evaluated less often.
"""

from __future__ import annotations

import pytest
import torch
from reference_runs import GROUP
from reference_runs import SMOKE
from reference_runs import reference_config
from reference_runs import reference_run

from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.engine.simulation import RunResult
from ilora.engine.simulation import run

pytestmark = GROUP  # the every-round runs are test_clientstore's memory runs


def _run(name: str, every: int, personal_every: int) -> RunResult:
    overrides = [f"eval.every={every}", f"eval.personal_every={personal_every}"]
    return run(reference_config(name, *overrides))


def _tensors(result: RunResult) -> dict[str, torch.Tensor]:
    return {**result.setup.factors, **result.setup.residual}


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_evaluating_less_often_trains_the_same_model(name: str) -> None:
    every_round, final_only = reference_run(name), _run(name, 3, 3)  # every round: eval 1, 1
    a, b = _tensors(every_round), _tensors(final_only)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert every_round.history.final == final_only.history.final
    last = (every_round.history.records[-1].metrics, final_only.history.records[-1].metrics)
    assert last[0]["personal_accuracy"] == last[1]["personal_accuracy"]
    assert last[0]["accuracy"] == last[1]["accuracy"]


def test_personal_every_sets_which_rounds_evaluate_the_clients_models() -> None:
    records = _run("fedit", 1, 2).history.records
    assert ["personal_accuracy" in r.metrics for r in records] == [False, True, True]
    assert all("accuracy" in r.metrics for r in records)


def test_personal_every_below_one_is_a_clear_error() -> None:
    with pytest.raises(config.ConfigError, match="eval.personal_every"):
        config.load(SMOKE, ["eval.personal_every=0"])
