"""``ilora flower ...``: run the same experiments on Flower (needs ``pip install ilora[flower]``).

Nothing here imports ``flwr`` at module level: the core CLI works without the extra, and a
command that needs it says how to install it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ilora import config as config_mod
from ilora.cli_common import USER_ERRORS
from ilora.cli_common import console
from ilora.cli_common import fail
from ilora.cli_options import ResumeOpt
from ilora.cli_options import RunConfigArg
from ilora.cli_options import SetOpt
from ilora.config import ConfigError

flower_app = typer.Typer(no_args_is_help=True, help="Run on Flower: simulation or deployment.")
INSTALL_HINT = "the Flower runtime needs its extra: pip install 'ilora[flower]'"
RoundTimeoutOpt = Annotated[float, typer.Option(help="seconds to wait for a round's replies")]


def require_flwr() -> None:
    """Exit with the install hint when ``flwr`` is missing (found, not imported); no telemetry."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    if importlib.util.find_spec("flwr") is None:
        fail(INSTALL_HINT)


class RayNetwork(StrEnum):
    """Where Ray's servers may listen during ``ilora flower simulate``."""

    private = "private"  # a network namespace of its own: loopback only, unreachable from outside
    host = "host"  # this machine's network: Ray binds its external address, unauthenticated


@flower_app.command("simulate")
def simulate(
    config: RunConfigArg = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default runs/flower-<algorithm>-<task>)")
    ] = None,
    cpus: Annotated[int, typer.Option(help="CPUs Ray may use (0: all)", min=0)] = 0,
    timeout: RoundTimeoutOpt = 600.0,
    resume: ResumeOpt = None,
    ray_network: Annotated[
        RayNetwork,
        typer.Option(help="private: Ray on loopback in a network of its own; host: Ray as is"),
    ] = RayNetwork.private,
    ray_dashboard: Annotated[
        bool, typer.Option(help="start Ray's dashboard (on 127.0.0.1)")
    ] = False,
) -> None:
    """Run an experiment on Flower's Simulation Engine (Ray): one virtual SuperNode per client.

    Exit codes: 0 done, 1 no result, 2 a user error, 3 the run stopped (one line: too few
    accepted uploads, a divergence, clients missing or silent at the handshake; resumable).
    Ends with the ServerApp, without waiting for ClientApp calls still in flight.
    """
    require_flwr()
    from ilora.flower import netns

    if ray_network is RayNetwork.private and not netns.is_private():
        args = ["flower", "simulate", *([str(config)] if config is not None else [])]
        args += [a for s in set_ or [] for a in ("--set", s)]
        args += ["--out", str(out)] if out else []
        args += ["--resume", str(resume)] if resume is not None else []
        args += ["--cpus", str(cpus), "--timeout", str(timeout), "--ray-network", "private"]
        args += ["--ray-dashboard"] if ray_dashboard else []
        from ilora.flower.lifetime import spawn  # the child dies with us, Ray included

        raise typer.Exit(spawn([sys.executable, "-m", "ilora.flower.netns", *args], False).wait())
    if ray_network is RayNetwork.host:
        console.print("[yellow]warning:[/] Ray's servers listen on this machine's address")
    _simulate(config, set_ or [], out, resume, (cpus, timeout, ray_dashboard))


def _simulate(
    config: Path | None,
    sets: list[str],
    out: Path | None,
    resume: Path | None,
    ray: tuple[int, float, bool],
) -> None:
    """Run the simulation (in the process's own network, chosen by the caller)."""
    cpus, timeout, dashboard = ray
    from ilora.flower.raystart import RayStart

    try:
        cfg, directory = _simulation_config(config, sets, out, resume)
    except USER_ERRORS as err:
        fail(err)
    ray_started = RayStart(cpus, dashboard, config_mod.to_yaml(cfg))  # starts while we import
    from ilora.flower import simulate as engine
    from ilora.flower.client import make_client_app
    from ilora.flower.lifetime import exit_now
    from ilora.flower.server import NODE_STATE
    from ilora.flower.server import make_server_app

    ray_started.wait()
    ended = engine.run(
        lambda report: make_server_app(
            cfg, directory, timeout=timeout, resume=resume is not None, report=report
        ),
        make_client_app(state_dir=(directory / NODE_STATE).resolve()),
        cfg.data.num_clients,
        ray_started.backend,
    )
    code, line = ended.verdict(directory)
    console.print(line, markup=False, style="bold red" if code else None)
    if ended.served:  # the run is written: end without waiting for Ray (ilora.flower.simulate)
        exit_now(code)
    raise typer.Exit(code=code)


def _simulation_config(
    config: Path | None, set_: list[str] | None, out: Path | None, resume: Path | None
) -> tuple[config_mod.ExperimentConfig, Path]:
    """Return the experiment and its run directory (``--resume``: the stored config)."""
    from ilora.engine.setup import validate

    if resume is not None:
        return stored_config(resume, config is not None or bool(set_) or out is not None)
    if config is None:
        raise ConfigError("give an experiment YAML (see configs/) or --resume RUN_DIR")
    cfg = config_mod.load(config, set_ or [])
    validate(cfg)
    return cfg, out or Path(f"runs/flower-{cfg.algorithm}-{cfg.task}")


def stored_config(resume: Path, other_options: bool) -> tuple[config_mod.ExperimentConfig, Path]:
    """Return the config stored in the run directory ``resume`` and the directory (``--resume``).

    Raises:
        ConfigError: if other options name a config too, or ``resume`` is no run directory.

    """
    if other_options:
        raise ConfigError(
            "--resume continues a run with the config stored in its directory; "
            "drop CONFIG, --set, --out and --overwrite"
        )
    if not (resume / "config.yaml").is_file():
        raise ConfigError(
            f"--resume {resume}: not a run directory (no config.yaml); give the --out "
            "directory of an earlier run"
        )
    return config_mod.load(resume / "config.yaml"), resume


@flower_app.command("new")
def new(
    directory: Annotated[Path, typer.Argument(help="the app directory to write")],
    config: Annotated[Path, typer.Option(help="experiment YAML to copy into the app")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a dotted key (kept in the app's run config)"),
    ] = None,
    out: Annotated[
        str, typer.Option(help="run directory on the SuperLink's machine (default: runs/...)")
    ] = "",
    timeout: RoundTimeoutOpt = 600.0,
    force: Annotated[bool, typer.Option(help="overwrite an app already in DIRECTORY")] = False,
) -> None:
    """Write a Flower app (pyproject.toml, the YAML, two modules) that `flwr run` starts."""
    require_flwr()
    from ilora.flower.app import AppExistsError
    from ilora.flower.app import write_app

    try:
        pyproject = write_app(directory, config, set_ or [], out, timeout, force)
    except (*USER_ERRORS, AppExistsError) as err:
        fail(err)
    start = f"ilora flower run {directory} <connection>"
    console.print(f"written: {pyproject.parent}/ (start it: {start})")


@flower_app.command("run")
def run_deployed(
    app: Annotated[Path, typer.Argument(help="the app directory (ilora flower new)")],
    connection: Annotated[
        str | None,
        typer.Argument(help="SuperLink connection in $FLWR_HOME/config.toml (default: default)"),
    ] = None,
    run_config: Annotated[
        list[str] | None, typer.Option(help="override the app's run config: 'resume=true'")
    ] = None,
) -> None:
    """Start the app's run on a SuperLink (flwr run --stream) and follow it to its end.

    Exit codes: 0 done; 3 the run stopped (resumable), with its one-line reason as `ilora run`
    prints it; 1 flwr or the ServerApp failed.
    """
    require_flwr()
    from ilora.flower.follow import run_and_follow

    done = run_and_follow(app, connection, run_config or [], lambda line: print(line, end=""))
    if code := done.exit_code():
        label = "run failed" if code == 3 else "error"
        console.print(f"[bold red]{label}:[/] {escape(done.message())}")
    raise typer.Exit(code=code)


@flower_app.command("certs")
def certs(
    directory: Annotated[Path, typer.Argument(help="where to write the certificates and keys")],
    nodes: Annotated[int, typer.Option(help="SuperNode key pairs to make", min=0)] = 2,
    days: Annotated[int, typer.Option(help="validity of the certificates in days", min=1)] = 7,
    host: Annotated[
        list[str] | None,
        typer.Option(help="another name or IP the SuperLink certificate is valid for"),
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite credentials in DIRECTORY")] = False,
) -> None:
    """Make a trial CA, a SuperLink TLS certificate and SuperNode keys (local trials only)."""
    require_flwr()
    from ilora.flower.certs import CredentialsExistError
    from ilora.flower.certs import make_trial_credentials

    try:
        made = make_trial_credentials(directory, nodes, days, host or [], force)
    except CredentialsExistError as err:
        fail(err)
    console.print(
        f"written: {made.ca}, {made.server_cert}, {made.server_key}, "
        f"{len(made.node_keys)} SuperNode key pair(s) in {directory}/nodes "
        f"(valid {days} day(s); for local trials only, see {directory}/README.md)"
    )


@flower_app.command(
    "superlink",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def superlink(
    ctx: typer.Context,
    operator_address: Annotated[
        list[str] | None,
        typer.Option(
            help="an address the Control and Runtime APIs answer (default: 127.0.0.1 and ::1)"
        ),
    ] = None,
) -> None:
    """Flower's SuperLink (any flower-superlink option after the command); Control API closed.

    The Fleet API answers every peer (TLS and registered SuperNode keys authenticate them);
    the Control and Runtime APIs answer only the operator's addresses.
    """
    require_flwr()
    from ilora.flower.superlink import OPERATOR_ADDRESSES
    from ilora.flower.superlink import run

    try:
        run(list(ctx.args), operator_address or OPERATOR_ADDRESSES)
    except ValueError as err:
        fail(f"--operator-address: {err}")


@flower_app.command("worker")
def worker(
    runtime_api_address: Annotated[
        str, typer.Option(help="the SuperNode's Runtime API, host:port (its --host/--port)")
    ],
    superexec_auth_secret_file: Annotated[
        Path | None,
        typer.Option(help="the secret file the SuperNode was given (signs AcquireTask)"),
    ] = None,
    root_certificates: Annotated[
        Path | None, typer.Option(help="CA of the Runtime API's TLS certificate (default: HTTP)")
    ] = None,
    poll: Annotated[float, typer.Option(help="seconds between polls while idle", min=0.01)] = 0.05,
) -> None:
    """Run the long-lived ClientApp process of a `flower-supernode --isolation process`."""
    require_flwr()
    import logging

    from ilora.flower.worker import RuntimeApi
    from ilora.flower.worker import read_secret
    from ilora.flower.worker import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per poll

    try:
        secret = read_secret(superexec_auth_secret_file)
        roots = root_certificates.read_bytes() if root_certificates else None
    except (OSError, ValueError) as err:
        fail(err)
        return
    serve(RuntimeApi(runtime_api_address, secret, roots), poll=poll)
