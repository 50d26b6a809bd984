"""The ``ServerApp``: builds the experiment, runs ``AlgorithmStrategy``, writes the run directory.

The experiment comes either from the Python caller (``make_server_app(config=...)``, as in
tests and ``run_simulation``) or from the app's run config (``flwr run``):

- ``config``: the experiment YAML, relative to the app's directory (``base``) or absolute;
- ``set`` (optional): space-separated ``key.path=value`` overrides, as ``ilora run --set``;
- ``out`` (optional): the run directory (absent or empty: ``runs/flower-<algorithm>-<task>``,
  relative to the ServerApp's working directory, which is where the SuperLink was started);
- ``timeout`` (optional): seconds to wait for one round's replies (default 600);
- ``resume`` (optional, default false): continue the run in ``out`` from its last valid
  checkpoint.

The run directory has the embedded engine's layout (``config.yaml``, ``history.jsonl``,
``summary.json``, the adapter, ``checkpoints/``): after every round the ServerApp writes the
same checkpoint as the embedded engine (``engine.checkpoint``), holding the server state, the
records and the RNG state. Client states (``cstate``) never reach the server: each node keeps
its clients' on its own disk, round by round (``flower.nodestate``), filed under the run's key
(``manifest.json``: ``node_state_run``); the handshake of a resumed run tells the nodes the
round to restore them as of, so the resumed run is bitwise the uninterrupted one, and a node
that cannot restore it refuses in one line. A run that stops (too few accepted uploads, a
divergence under ``fed.stop_on_divergence``, a refused handshake) writes its one-line reason
to ``failure.txt`` and prints it as one line starting with ``FAILED_PREFIX`` (what ``ilora
flower run`` looks for in the streamed log of a deployed run).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context
from flwr.app import UserConfig
from flwr.serverapp import Grid
from flwr.serverapp import ServerApp

from ilora import config as config_mod
from ilora.config import ConfigError
from ilora.config import ExperimentConfig
from ilora.engine import checkpoint
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.history import write_json_atomic
from ilora.engine.outputs import CHECKPOINTS
from ilora.engine.outputs import RunWriter
from ilora.engine.roundstep import RoundFailedError
from ilora.engine.setup import build
from ilora.flower.grid import PollingGrid
from ilora.flower.handshake import HandshakeError
from ilora.flower.strategy import AlgorithmStrategy

DEFAULT_TIMEOUT = 600.0
FAILURE = "failure.txt"  # the one-line reason of a run that stopped (RoundFailedError)
FAILED_PREFIX = "ilora: run failed: "  # the line a stopped run prints (ilora flower run reads it)
NODE_STATE = "node-state"  # the simulation's nodes' default state directory, in the run's
RUN_KEY = "node_state_run"  # the manifest's name of the run's key on the nodes
log = logging.getLogger(__name__)


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
    resume: bool | None = None,
    report: Callable[[str | None], None] | None = None,
) -> ServerApp:
    """Return the ``ServerApp`` of an experiment (given here, or by the run config).

    Args:
        config: the experiment; None reads it from the run config (``flwr run``).
        out: the run directory; None takes the run config's ``out`` or the default.
        base: the directory a relative ``config`` path is resolved against (the app's).
        timeout: seconds to wait for a round's replies; None takes the run config's or 600.
        resume: continue the run in ``out`` from its last valid checkpoint; None takes the
            run config's ``resume`` (default false).
        report: called once the run has ended and its files are written, with the one-line
            reason of a stopped run or None; None prints that reason after ``FAILED_PREFIX``
            (``ilora flower simulate`` passes its own, see :mod:`ilora.flower.simulate`).

    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = context.run_config
        cfg = config or config_from_run_config(run_config, base or Path.cwd())
        wait = timeout or float(run_config.get("timeout", DEFAULT_TIMEOUT))
        default = f"runs/flower-{cfg.algorithm}-{cfg.task}"
        directory = out or Path(str(run_config.get("out", "")) or default)  # "": the default
        again = bool(run_config.get("resume", False)) if resume is None else resume
        how = None if config else f"ilora flower run APP CONNECTION {resume_option(directory)}"
        serve(grid, cfg, directory, wait, again, report or announce, how)

    return app


def serve(
    grid: Grid,
    cfg: ExperimentConfig,
    directory: Path,
    wait: float,
    resume: bool,
    report: Callable[[str | None], None] | None = None,
    resume_command: str | None = None,
) -> None:
    """Run the experiment over ``grid`` and write its run directory (checkpoints included).

    A run that cannot go on (:class:`RoundFailedError`, or a :class:`HandshakeError`: the
    nodes do not make up the experiment, or cannot restore their state) logs its one-line
    reason, writes it to ``FAILURE`` in the run directory (the ``ilora flower`` commands exit
    with code 3 on it), passes it to ``report`` (default :func:`announce`) and returns: no
    traceback; a finished run passes None. ``resume_command``: how the user resumes the run,
    for that reason (default: ``ilora flower simulate --resume DIR``).
    """
    exp = build(cfg)
    ckpt = resume_point(directory) if resume else None
    command = resume_command or f"ilora flower simulate --resume {directory}"
    (directory / FAILURE).unlink(missing_ok=True)
    if ckpt is None:
        shutil.rmtree(directory / NODE_STATE, ignore_errors=True)  # another run's node states
    with RunWriter(directory, cfg, ckpt) as writer:
        strategy = AlgorithmStrategy(
            exp,
            wait,
            connect_wait=wait,  # SuperNodes may be late
            on_round=writer.on_round,
            on_checkpoint=writer.on_checkpoint,
            resume=ckpt,
            resume_command=command,
            run_key=run_key(writer, directory, ckpt is not None),
        )
        reason: str | None = None
        try:
            result = strategy.run(PollingGrid(grid))
        except (RoundFailedError, HandshakeError) as err:
            reason = " ".join(str(err).splitlines())  # one line, whatever a client wrote
            (directory / FAILURE).write_text(f"{reason}\n")
            writer.abort()
        else:
            writer.finish(result)
    (report or announce)(reason)


def announce(reason: str | None) -> None:
    """Print a stopped run's reason as one line after ``FAILED_PREFIX`` (``ilora flower run``)."""
    if reason is not None:
        print(f"{FAILED_PREFIX}{reason}", file=sys.stderr, flush=True)


def resume_option(directory: Path) -> str:
    """Return the run config option that resumes the deployed run in ``directory``."""
    return f"--run-config 'resume=true out=\"{directory}\"'"


def run_key(writer: RunWriter, directory: Path, resumed: bool) -> str:
    """Return the run's key on the nodes: the manifest's when resumed, else a new one."""
    key = writer.manifest.get(RUN_KEY) if resumed else None
    if not isinstance(key, str):
        key = secrets.token_hex(16)  # a resumed run without one: its nodes will refuse
        writer.manifest[RUN_KEY] = key
        write_json_atomic(directory / "manifest.json", writer.manifest)
    return key


def resume_point(directory: Path) -> Checkpoint | None:
    """Return the newest valid checkpoint of the run in ``directory`` (logging what is skipped)."""
    ckpt, skipped = checkpoint.load_latest(directory / CHECKPOINTS)
    for message in skipped:
        log.warning(message)
    if ckpt is None:
        log.warning("no valid checkpoint in %s: the run starts again from round 1", directory)
    else:
        log.info("resuming after round %d", ckpt.round)
    return ckpt
