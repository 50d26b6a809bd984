"""A whole Flower deployment on this machine (127.0.0.1): started, used and stopped together.

The real components, as separate processes, with TLS and SuperNode authentication on:

1. ``ilora flower superlink`` (Flower's SuperLink with the Control and Runtime APIs answering
   only the operator's addresses) with the trial certificates, ``--enable-supernode-auth`` and
   ``--disable-runtime-dependency-installation`` (the Control, Fleet and Runtime APIs share one
   HTTPS port in flwr 1.42);
2. ``flwr supernode register <node-i.pub> <connection>`` per SuperNode (the CLI reads the
   connection, address and CA, from ``$FLWR_HOME/config.toml``);
3. ``flower-supernode --root-certificates ca.crt --auth-supernode-private-key node-i.key
   --node-config 'partition-id=i rank=r'``, each with its own Runtime API port and FLWR_HOME;
   by default with ``--isolation process`` and one long-lived ``ilora flower worker`` per
   SuperNode (imports paid once), both holding the same SuperExec secret; ``isolation=
   "subprocess"`` gives Flower's default (one ClientApp process per message);
4. ``flwr run APP <connection> --stream``, which returns when the run has finished (or
   ``ilora flower run APP <connection>``, which follows it and exits 3 on a stopped run).

Everything (logs, FLWR_HOMEs, the CLI's config) lives under one root directory; ports are picked
free at run time. :meth:`LoopbackDeployment.stop` ends every process it started and every
process those started (the SuperLink starts its SuperExec in a session of its own, so process
groups alone do not reach it): the process trees are read from ``/proc`` before anything is
signalled; and if this process ends without stopping them (killed, a test timed out) they end
with it (:mod:`ilora.flower.lifetime`). Tests and benchmarks use this module;
``scripts/flower_local_deployment.sh`` does the same steps by hand.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import TracebackType

from ilora.flower.certs import TrialCredentials
from ilora.flower.lifetime import spawn
from ilora.flower.processes import HOST
from ilora.flower.processes import _alive
from ilora.flower.processes import _signal
from ilora.flower.processes import free_ports
from ilora.flower.processes import process_tree
from ilora.flower.processes import tool

__all__ = ["HOST", "DeploymentError", "LoopbackDeployment", "free_ports", "process_tree"]
CONNECTION = "loopback"
ILORA = [sys.executable, "-m", "ilora", "flower"]  # our commands, from this Python


class DeploymentError(RuntimeError):
    """A component did not start, or a step of the deployment failed (with its log's tail)."""


@dataclass
class LoopbackDeployment:
    """SuperLink, SuperNodes and the ``flwr`` CLI on 127.0.0.1, all files under ``root``.

    Use as a context manager (``with LoopbackDeployment(root, creds) as dep: ...``) so that
    :meth:`stop` runs whatever happens.
    """

    root: Path
    creds: TrialCredentials
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    ports: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()  # the components run in it, so no path may be relative
        self.root.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LoopbackDeployment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- environment and processes
    def _port(self) -> int:
        """Return a free port not handed out before (a component may not have bound it yet)."""
        while (port := free_ports(1)[0]) in self.ports:
            pass
        self.ports.add(port)
        return port

    def _env(self, home: str) -> dict[str, str]:
        env = dict(self.env)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["FLWR_HOME"] = str(self.root / "home" / home)
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, name: str, cmd: list[str], home: str) -> subprocess.Popen[bytes]:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        (self.root / "home" / home).mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = spawn(  # its own session; dies with this process (flower.lifetime)
                cmd,
                cwd=self.root,
                env=self._env(home),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name], self.logs[name] = proc, log
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """Return the end of a component's log."""
        path = self.logs.get(name)
        return path.read_text(errors="replace")[-chars:] if path and path.exists() else ""

    def pids(self) -> set[int]:
        """Return every live process of this deployment (the components and their children)."""
        return process_tree([p.pid for p in tuple(self.procs.values())])  # other threads ask too

    # ---- the steps
    def start_superlink(self, timeout: float = 120.0) -> None:
        """Start the SuperLink (TLS, node authentication, no dependency installs); wait for it."""
        self.port = self.port or self._port()
        cmd = [*ILORA, "superlink", "--host", HOST, "--port", str(self.port)]
        cmd += ["--ssl-ca-certfile", str(self.creds.ca.resolve())]
        cmd += ["--ssl-certfile", str(self.creds.server_cert.resolve())]
        cmd += ["--ssl-keyfile", str(self.creds.server_key.resolve())]
        cmd += ["--enable-supernode-auth", "--disable-runtime-dependency-installation"]
        proc = self._start("superlink", cmd, "superlink")
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DeploymentError(f"the SuperLink did not start:\n{self.log_tail('superlink')}")
            time.sleep(0.2)
        self.write_cli_config("cli", self.port)

    def write_cli_config(self, home: str, port: int) -> None:
        """Write the ``flwr`` CLI config of FLWR_HOME ``home``: the SuperLink at ``port``."""
        directory = self.root / "home" / home
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "{HOST}:{port}"\n'
            f"root-certificates = {json.dumps(str(self.creds.ca.resolve()))}\n"
        )

    def flwr(self, name: str, args: list[str], home: str = "cli", timeout: float = 120.0) -> int:
        """Run ``flwr args...`` with the CLI config of ``home``; return its exit code."""
        return _wait(self._start(name, [tool("flwr"), *args], home), timeout)

    def register(self, public_keys: Iterable[Path], timeout: float = 120.0) -> list[int]:
        """Register SuperNode public keys (``flwr supernode register``, in parallel)."""
        keys = list(public_keys)
        for i, key in enumerate(keys):
            cmd = [tool("flwr"), "supernode", "register", str(key.resolve()), CONNECTION]
            self._start(f"register-{i}", [*cmd, "--format", "json"], "cli")
        node_ids = []
        for i in range(len(keys)):
            code = _wait(self.procs.pop(f"register-{i}"), timeout)
            log = self.log_tail(f"register-{i}")
            if code != 0:
                raise DeploymentError(f"registering {keys[i]} failed:\n{log}")
            found = re.search(r'"node-id":\s*(\d+)', log)
            node_ids.append(int(found.group(1)) if found else -1)
        return node_ids

    def start_supernode(
        self,
        name: str,
        private_key: Path,
        node_config: str,
        isolation: str = "process",
        superlink_port: int = 0,
    ) -> None:
        """Start a SuperNode with TLS and its authentication key; ``node_config``: 'k=v ...'.

        ``isolation="process"`` also starts its ``ilora flower worker`` (``<name>-worker``);
        ``superlink_port``: where it reaches the SuperLink (0: the SuperLink's own port).
        """
        runtime = self._port()
        cmd = [tool("flower-supernode"), "--superlink", f"{HOST}:{superlink_port or self.port}"]
        cmd += ["--root-certificates", str(self.creds.ca.resolve())]
        cmd += ["--auth-supernode-private-key", str(private_key.resolve())]
        cmd += ["--node-config", node_config, "--host", HOST, "--port", str(runtime)]
        if isolation == "process":
            cmd += ["--isolation", "process", "--superexec-auth-secret-file", str(self.secret())]
        self._start(name, cmd, name)
        if isolation == "process":
            worker = [*ILORA, "worker", "--runtime-api-address", f"{HOST}:{runtime}"]
            worker += ["--superexec-auth-secret-file", str(self.secret())]
            self._start(f"{name}-worker", worker, name)

    def secret(self) -> Path:
        """Return the SuperExec secret file of the SuperNodes and their workers (made once)."""
        path = self.root / "superexec.secret"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(32).hex().encode())  # from OS entropy
        return path

    def run(self, app: Path, run_config: str = "", timeout: float = 900.0) -> int:
        """``flwr run APP <connection> --stream`` (returns when the run ends); return its run id.

        Raises:
            DeploymentError: if the command fails or does not return within ``timeout`` s.

        """
        cmd = [tool("flwr"), "run", str(app.resolve()), CONNECTION, "--stream"]
        if run_config:
            cmd += ["--run-config", run_config]
        proc = self._start("flwr-run", cmd, "cli")
        code = _wait(proc, timeout)
        log = self.log_tail("flwr-run", 20_000)
        found = re.search(r"Successfully started run (\d+)", log)
        if code != 0 or found is None:
            raise DeploymentError(f"`{shlex.join(cmd)}` failed (exit {code}):\n{log[-3000:]}")
        return int(found.group(1))

    def follow(self, app: Path, run_config: str = "", timeout: float = 900.0) -> tuple[int, str]:
        """``ilora flower run APP <connection>``: return its exit code and its output."""
        cmd = [*ILORA, "run", str(app.resolve()), CONNECTION]
        cmd += ["--run-config", run_config] if run_config else []
        code = _wait(self._start("ilora-run", cmd, "cli"), timeout)
        return code, self.log_tail("ilora-run", 10**7)

    def wait_exit(self, name: str, timeout: float) -> int | None:
        """Return a component's exit code, waiting up to ``timeout`` s (None: still running)."""
        try:
            return self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 5.0) -> None:
        """End every process of the deployment: SIGTERM, then SIGKILL after ``grace`` s."""
        groups = [proc.pid for proc in tuple(self.procs.values())]
        tree = self.pids()
        _signal(tree, signal.SIGTERM, groups)
        deadline = time.monotonic() + grace
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            for proc in self.procs.values():
                proc.poll()  # reap our own children
            time.sleep(0.1)
        _signal(tree | self.pids(), signal.SIGKILL, groups)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(process_tree([proc.pid]), signal.SIGKILL, [proc.pid])
        proc.wait()
        return -9
