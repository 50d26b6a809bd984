"""Run one experiment into a run directory without a terminal UI, and tell finished runs apart.

Benchmark grids call these from worker processes; ``ilora compare`` shares :func:`finished`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.config import ConfigError


def finished(
    cfg: config_mod.ExperimentConfig, out: Path, markers: tuple[str, ...] = ("summary.json",)
) -> bool:
    """Return True if ``out`` holds a finished run of exactly ``cfg``.

    A run is finished when one of the ``markers`` files exists (``summary.json``; a campaign
    also counts the ``stopped.json`` of a run the engine stopped). The stored ``config.yaml``
    is loaded like any config (options added since it was written take their defaults), so a
    run stays reusable when the schema grows.
    """
    ended = any((out / name).is_file() for name in markers)
    if not ended or not (out / "config.yaml").is_file():
        return False
    try:
        done = config_mod.load(out / "config.yaml")
    except ConfigError:
        return False
    return config_mod.to_dict(done) == config_mod.to_dict(cfg)


def run_to_dir(cfg: config_mod.ExperimentConfig, out: Path) -> dict[str, Any]:
    """Run ``cfg`` on the embedded engine, write its run directory and return the summary.

    No per-round checkpoints are written: a grid resumes at run granularity (an interrupted
    run leaves no ``summary.json`` and starts again).
    """
    from ilora.engine.outputs import RunWriter
    from ilora.engine.setup import build
    from ilora.engine.simulation import run

    experiment = build(cfg)
    with RunWriter(out, cfg) as writer:
        result = run(cfg, on_round=writer.on_round, exp=experiment)
        return writer.finish(result)
