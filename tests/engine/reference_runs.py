"""One run per method, made once per process, that two all-method tests compare against.

``test_clientstore`` (the same run with the clients' states on disk) and ``test_eval_schedule``
(the same run evaluated less often) both need it: three rounds of the smoke config with half the
clients sampled (a state written in one round is read back rounds later), two local steps a
round, evaluated every round. Both modules are in the xdist group :data:`GROUP`, so one worker
makes each method's run once. Callers only read the result.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from ilora import config
from ilora.engine.simulation import RunResult
from ilora.engine.simulation import run

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
COMMON = ["fed.rounds=3", "fed.fraction=0.5", "data.local_test_fraction=0.25", "train.steps=2"]
GROUP = pytest.mark.xdist_group("reference-runs")  # both modules on one worker: runs shared


def reference_config(name: str, *extra: str) -> config.ExperimentConfig:
    """Return the reference run's config for method ``name``, with ``extra`` overrides."""
    return config.load(SMOKE, [f"algorithm={name}", *COMMON, "eval.subset=0", *extra])


@cache
def reference_run(name: str) -> RunResult:
    """Return method ``name``'s reference run (evaluated every round), made once."""
    return run(reference_config(name))
