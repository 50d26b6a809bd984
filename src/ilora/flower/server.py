"""The ``ServerApp``: builds the experiment, runs ``AlgorithmStrategy``, writes the run directory.

The experiment comes either from the Python caller (``make_server_app(config=...)``, as in
tests and ``run_simulation``) or from the app's run config (``flwr run``):

- ``config``: the experiment YAML, relative to the app's directory (``base``) or absolute;
- ``set`` (optional): space-separated ``key.path=value`` overrides, as ``ilora run --set``;
- ``out`` (optional): the run directory (absent or empty: ``runs/flower-<algorithm>-<task>``,
  relative to the ServerApp's working directory, which is where the SuperLink was started);
- ``timeout`` (optional): seconds to wait for one round's replies (default 600).

The run directory has the embedded engine's layout (``config.yaml``, ``history.jsonl``,
``summary.json``, the adapter); the Flower runtime does not checkpoint (client states live on
the nodes), so a crashed deployment starts again.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, UserConfig
from flwr.serverapp import Grid, ServerApp

from ilora import config as config_mod
from ilora.config import ConfigError, ExperimentConfig
from ilora.engine.outputs import RunWriter
from ilora.engine.setup import build
from ilora.flower.grid import PollingGrid
from ilora.flower.strategy import AlgorithmStrategy

DEFAULT_TIMEOUT = 600.0


def config_from_run_config(run_config: UserConfig, base: Path) -> ExperimentConfig:
    """Return the experiment named by a Flower run config (see the module docstring)."""
    if "config" not in run_config:
        raise ConfigError(
            "the Flower app's run config has no 'config' key; set [tool.flwr.app.config] "
            'config = "experiment.yaml" in its pyproject.toml or pass --run-config'
        )
    path = Path(str(run_config["config"]))
    overrides = str(run_config.get("set", "")).split()
    return config_mod.load(path if path.is_absolute() else base / path, overrides)


def make_server_app(
    config: ExperimentConfig | None = None,
    out: Path | None = None,
    base: Path | None = None,
    timeout: float | None = None,
) -> ServerApp:
    """Return the ``ServerApp`` of an experiment (given here, or by the run config).

    Args:
        config: the experiment; None reads it from the run config (``flwr run``).
        out: the run directory; None takes the run config's ``out`` or the default.
        base: the directory a relative ``config`` path is resolved against (the app's).
        timeout: seconds to wait for a round's replies; None takes the run config's or 600.

    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = context.run_config
        cfg = config or config_from_run_config(run_config, base or Path.cwd())
        wait = timeout or float(run_config.get("timeout", DEFAULT_TIMEOUT))
        default = f"runs/flower-{cfg.algorithm}-{cfg.task}"
        directory = out or Path(str(run_config.get("out", "")) or default)  # "": the default
        exp = build(cfg)
        strategy = AlgorithmStrategy(exp, wait, connect_wait=wait)  # SuperNodes may be late
        with RunWriter(directory, cfg) as writer:
            result = strategy.run(PollingGrid(grid), on_round=writer.on_round)
            writer.finish(result)

    return app
