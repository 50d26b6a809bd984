"""Every protocol preset builds its clients at both of the protocol's Dirichlet alphas."""

from __future__ import annotations

from pathlib import Path

import pytest

from ilora.config import load
from ilora.engine.setup import load_data
from ilora.engine.setup import make_task
from ilora.engine.setup import partition
from ilora.engine.setup import with_validation
from ilora.engine.shares import split_local

PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs" / "protocol").glob("*.yaml"))
SEEDS = (0, 1, 2, 3, 4, 100)  # the comparison's seeds and the tuning seed


@pytest.mark.slow  # loads each preset's real dataset (about 25 s for the three)
@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_protocol_preset_builds_its_clients(path: Path) -> None:
    base = load(path, ["eval.split=validation"])
    data = with_validation(load_data(make_task(base.task, base.task_args)), base)
    for alpha in (0.1, 0.5):
        for seed in SEEDS:
            cfg = load(
                path,
                ["eval.split=validation", f"seed={seed}", f"data.partition_args.alpha={alpha}"],
            )
            parts = partition(cfg, data.train)  # raises ConfigError if it cannot build
            assert len(parts) == cfg.data.num_clients >= 20
            min_size = cfg.data.partition_args.get("min_size", 1)
            for cid, idx in enumerate(parts):
                assert len(idx) >= min_size, (alpha, seed, cid)
                train, _ = split_local(idx, cfg.data.local_test_fraction, seed, cid)
                assert len(train) > 0
