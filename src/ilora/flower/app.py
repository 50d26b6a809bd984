"""``ilora flower new``: write a Flower app directory that ``flwr run`` starts.

The app is small on purpose: two modules name the ``ServerApp`` and the ``ClientApp`` of
:mod:`ilora.flower` (every registered algorithm, chosen by the experiment YAML), and the YAML is
copied in. What it writes::

    DIR/pyproject.toml          [tool.flwr.app]: publisher, components, run config
    DIR/experiment.yaml         the experiment, copied from --config
    DIR/ilora_app/__init__.py
    DIR/ilora_app/server_app.py app = make_server_app(base=<DIR>)
    DIR/ilora_app/client_app.py app = make_client_app()
    DIR/README.md               how to start it

The run config (``[tool.flwr.app.config]``, overridable with ``flwr run --run-config``):
``config`` (the YAML, relative to the app), ``set`` (space-separated ``key.path=value``
overrides, from ``--set``), ``out`` (the run directory on the SuperLink's machine; empty: the
default ``runs/flower-<algorithm>-<task>``, relative to where the SuperLink was started) and
``timeout`` (seconds to wait for one round's replies) and ``resume`` (false; true continues the
run in ``out`` after its last valid checkpoint).

The app declares no dependency but ``flwr``: the SuperLink runs with
``--disable-runtime-dependency-installation`` and SuperNodes never install (their default), so
``ilora[flower]`` must be installed where each of them runs. ``flwr run`` sends the app's source
(a FAB) to the SuperLink, which passes it on to the SuperNodes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ilora import config as config_mod
from ilora.engine.setup import validate
from ilora.flower import FLWR_VERSION

PACKAGE = "ilora_app"
CLIENTAPP_REF = f"{PACKAGE}.client_app:app"  # the only ClientApp ``ilora flower worker`` runs
YAML_NAME = "experiment.yaml"
DEFAULT_TIMEOUT = 600.0


class AppExistsError(FileExistsError):
    """The target directory already holds a Flower app."""


PYPROJECT = """\
# A Flower app made by `ilora flower new` from {source}.
# Start it with `ilora flower run {app_dir} <superlink-connection>` (see README.md).
[project]
name = "ilora-app"
version = "1.0.0"
description = "ILoRA: federated LoRA fine-tuning with heterogeneous clients, on Flower"
license = "Apache-2.0"
# ilora[flower] must be installed where the SuperLink and every SuperNode run: the app installs
# nothing at run time (flower-superlink --disable-runtime-dependency-installation).
dependencies = ["flwr=={flwr}"]

[tool.flwr.app]
publisher = "ilora"

[tool.flwr.app.components]
serverapp = "{package}.server_app:app"
clientapp = "{clientapp}"

[tool.flwr.app.config]
# the experiment YAML, relative to this directory
config = {config}
# space-separated overrides, as `ilora run --set`: "fed.rounds=5 seed=1"
set = {set}
# the run directory, on the SuperLink's machine (relative to where flower-superlink was started);
# empty: runs/flower-<algorithm>-<task>
out = {out}
# seconds to wait for one round's replies before counting the missing ones as failed
timeout = {timeout!r}
# true: continue the run in `out` after its last valid checkpoint (--run-config 'resume=true')
resume = false
"""

SERVER_APP = '''\
"""The ServerApp: the experiment in ../{yaml} (run config ``config``), any registered algorithm."""

from pathlib import Path

from ilora.flower.server import make_server_app

app = make_server_app(base=Path(__file__).resolve().parent.parent)
'''

CLIENT_APP = '''\
"""The ClientApp: one client of the experiment, chosen by the SuperNode's ``partition-id``."""

from ilora.flower.client import make_client_app

app = make_client_app()
'''

README = """\
# ILoRA on Flower (made by `ilora flower new`)

The experiment: `{yaml}`{overrides}. Every machine that runs the SuperLink or a SuperNode
needs `pip install 'ilora[flower]'` (Flower {flwr}); the app installs nothing at run time.

1. Certificates and node keys for a local trial: `ilora flower certs certs --nodes {clients}`.
2. SuperLink: `ilora flower superlink --ssl-ca-certfile certs/ca.crt --ssl-certfile
   certs/server.pem --ssl-keyfile certs/server.key --enable-supernode-auth
   --disable-runtime-dependency-installation` (HTTPS on 127.0.0.1:8000; `--host`/`--port` to
   change). Its Control API (`flwr run`, `flwr ls`, `flwr supernode register`) answers only
   the SuperLink's own machine (`--operator-address` to add one).
3. On the SuperLink's machine, register each SuperNode's public key: `flwr supernode register
   certs/nodes/node-<i>.pub <connection>` (the connection, in `$FLWR_HOME/config.toml`, names
   the SuperLink's address and `ca.crt`).
4. One SuperNode per client (data.num_clients = {clients}): `flower-supernode --superlink
   <host>:8000 --root-certificates certs/ca.crt --auth-supernode-private-key
   certs/nodes/node-<i>.key --node-config 'partition-id=<i>' --isolation process
   --superexec-auth-secret-file node.secret --port <p>` and its ClientApp process `ilora flower
   worker --runtime-api-address 127.0.0.1:<p> --superexec-auth-secret-file node.secret`
   (`node.secret`: random bytes, mode 0600; add `rank=<r>` to the node config to override the
   client's rank; several SuperNodes on one machine need different `--port`s).
5. On the SuperLink's machine, from this directory: `ilora flower run . <connection>` (`flwr
   run . <connection> --stream`, followed to the end: exit code 0 done, 3 the run stopped,
   with its one-line reason; `flwr ls <connection>` shows its status). A stopped or killed
   run continues with `--run-config 'resume=true'` (and its `out`).

The run directory (`history.jsonl`, `summary.json`, the adapter) is written on the SuperLink's
machine: `out` in `pyproject.toml`, or `--run-config 'out="/abs/dir"'`.
"""


def _write_package(package: Path) -> None:
    """Write the app's Python package: the ServerApp and the ClientApp modules."""
    (package / "__init__.py").write_text('"""A Flower app of ILoRA (see ../README.md)."""\n')
    (package / "server_app.py").write_text(SERVER_APP.format(yaml=YAML_NAME))
    (package / "client_app.py").write_text(CLIENT_APP)


def _write_readme(directory: Path, cfg: config_mod.ExperimentConfig, sets: list[str]) -> None:
    """Write the app's README.md: how to run it in simulation and in deployment."""
    set_text = " ".join(sets)
    (directory / "README.md").write_text(
        README.format(
            yaml=YAML_NAME,
            overrides=f" with `set = {json.dumps(set_text)}`" if sets else "",
            clients=cfg.data.num_clients,
            flwr=FLWR_VERSION,
        )
    )


def _checked_config(config_path: Path, sets: list[str]) -> config_mod.ExperimentConfig:
    """Return the validated config of ``config_path`` + ``sets`` (no override with a space).

    Raises:
        ConfigError: if the config or an override is invalid.

    """
    cfg = config_mod.load(config_path, sets)
    validate(cfg)
    if any(" " in s for s in sets):
        raise config_mod.ConfigError(
            f"the app's run config keeps overrides space-separated, so an override cannot "
            f"contain a space: {sets}; write lists without spaces (lora.ranks=[2,4])"
        )
    return cfg


def write_app(
    directory: Path,
    config_path: Path,
    overrides: list[str] | None = None,
    out: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
) -> Path:
    """Write the Flower app of the experiment ``config_path`` (+ ``overrides``) into ``directory``.

    The config is loaded and validated first, so a bad key fails here and not on the SuperLink.

    Returns:
        the path of the app's ``pyproject.toml``.

    Raises:
        AppExistsError: if ``directory/pyproject.toml`` exists and ``force`` is false.
        ConfigError: if the config or an override is invalid.

    """
    sets = list(overrides or [])
    cfg = _checked_config(config_path, sets)
    pyproject = directory / "pyproject.toml"
    if pyproject.exists() and not force:
        raise AppExistsError(f"{directory} already holds an app (pyproject.toml); use --force")
    package = directory / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    set_text = " ".join(sets)
    (directory / YAML_NAME).write_text(Path(config_path).read_text())
    pyproject.write_text(
        PYPROJECT.format(
            source=Path(config_path).as_posix(),
            app_dir=directory.as_posix(),
            package=PACKAGE,
            clientapp=CLIENTAPP_REF,
            flwr=FLWR_VERSION,
            config=json.dumps(YAML_NAME),
            set=json.dumps(set_text),
            out=json.dumps(out),
            timeout=float(timeout),
        )
    )
    _write_package(package)
    _write_readme(directory, cfg, sets)
    return pyproject
