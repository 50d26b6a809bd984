"""The Python entry points: ``ilora.run`` and ``ilora.load_config``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ilora.config import ExperimentConfig
from ilora.config import load
from ilora.engine.history import History


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Return the config in ``path`` (defaults when None) with ``key.path=value`` overrides."""
    return load(path, tuple(overrides))


def run(
    config: ExperimentConfig | str | Path,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
) -> History:
    """Run one experiment on the embedded engine and return its history.

    Args:
        config: a config object or the path of a YAML config.
        overrides: dotted ``key=value`` overrides applied to a YAML config.
        out: when given, the run directory to write (config, history, summary, adapter).

    """
    from ilora.engine.outputs import RunWriter
    from ilora.engine.simulation import run as simulate

    cfg = config if isinstance(config, ExperimentConfig) else load(config, tuple(overrides))
    if out is None:
        return simulate(cfg).history
    with RunWriter(Path(out), cfg) as writer:
        result = simulate(
            cfg,
            on_round=writer.on_round,
            on_checkpoint=writer.on_checkpoint,
            store_dir=writer.store_dir,
        )
        writer.finish(result)
    return result.history
