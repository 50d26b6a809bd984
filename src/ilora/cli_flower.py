"""``ilora flower ...``: run the same experiments on Flower (needs ``pip install ilora[flower]``).

Nothing here imports ``flwr`` at module level: the core CLI works without the extra, and a
command that needs it says how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ilora import config as config_mod
from ilora.config import ConfigError
from ilora.registry import UnknownNameError
from ilora.tasks.catalog import AssetMissingError

flower_app = typer.Typer(no_args_is_help=True, help="Run on Flower: simulation or deployment.")
console = Console()
USER_ERRORS = (ConfigError, UnknownNameError, AssetMissingError, FileNotFoundError, ValueError)
INSTALL_HINT = "the Flower runtime needs its extra: pip install 'ilora[flower]'"


def fail(err: Exception | str) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


def require_flwr() -> None:
    """Exit with the install hint when ``flwr`` is missing; switch its telemetry off."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        import flwr  # noqa: F401
    except ModuleNotFoundError:
        fail(INSTALL_HINT)


@flower_app.command("simulate")
def simulate(
    config: Annotated[Path, typer.Argument(help="experiment YAML (see configs/)")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a dotted key: fed.rounds=3")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default runs/flower-<algorithm>-<task>)")
    ] = None,
    cpus: Annotated[int, typer.Option(help="CPUs Ray may use (0: all)", min=0)] = 0,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a round's replies")] = 600.0,
) -> None:
    """Run an experiment on Flower's Simulation Engine (Ray): one virtual SuperNode per client."""
    require_flwr()
    from flwr.simulation import run_simulation

    from ilora.engine.setup import validate
    from ilora.flower.client import make_client_app
    from ilora.flower.server import make_server_app

    try:
        cfg = config_mod.load(config, set_ or [])
        validate(cfg)
    except USER_ERRORS as err:
        fail(err)
        return
    directory = out or Path(f"runs/flower-{cfg.algorithm}-{cfg.task}")
    init_args: dict[str, int | bool] = {"include_dashboard": False}
    if cpus:
        init_args["num_cpus"] = cpus
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args}
    run_simulation(
        make_server_app(cfg, directory, timeout=timeout),
        make_client_app(),
        num_supernodes=cfg.data.num_clients,
        backend_config=backend,  # type: ignore[arg-type]
    )
    summary = directory / "summary.json"
    if not summary.is_file():
        fail(f"the simulation ended without a result in {directory}; see the log above")
    console.print(f"written: {directory}/summary.json, history.jsonl")


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
    timeout: Annotated[float, typer.Option(help="seconds to wait for a round's replies")] = 600.0,
    force: Annotated[bool, typer.Option(help="overwrite an app already in DIRECTORY")] = False,
) -> None:
    """Write a Flower app (pyproject.toml, the YAML, two modules) that `flwr run` starts."""
    require_flwr()
    from ilora.flower.app import AppExistsError, write_app

    try:
        pyproject = write_app(directory, config, set_ or [], out, timeout, force)
    except (*USER_ERRORS, AppExistsError) as err:
        fail(err)
        return
    console.print(f"written: {pyproject.parent}/ (start it: flwr run {directory} <connection>)")


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
    from ilora.flower.certs import CredentialsExistError, make_trial_credentials

    try:
        made = make_trial_credentials(directory, nodes, days, host or [], force)
    except CredentialsExistError as err:
        fail(err)
        return
    console.print(
        f"written: {made.ca}, {made.server_cert}, {made.server_key}, "
        f"{len(made.node_keys)} SuperNode key pair(s) in {directory}/nodes "
        f"(valid {days} day(s); for local trials only, see {directory}/README.md)"
    )
