"""Ray under ``ilora flower simulate`` listens on loopback only (one real run, 4 clients).

``ilora flower simulate`` runs in its own process group (Ray's workers included) and is killed
with the group if it overruns; its history must equal the embedded engine's, round by round.

While it runs, the test reads every listening TCP socket of every process of that group, in
the process's own network namespace (``/proc/<pid>/net/tcp*``: psutil would read the test's
namespace and miss them). Ray's servers must be there, every one bound to loopback, in a
namespace whose only interface is ``lo``; and connecting to Ray's GCS port from the test's
network, as another user of the machine would, must fail.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_simulation_engine import OVERRIDES
from test_simulation_engine import assert_matches_embedded

from ilora.flower.lifetime import spawn
from ilora.flower.netns import interfaces
from ilora.flower.processes import process_tree

Listener = tuple[str, str, int, tuple[str, ...]]  # process name, address, port, interfaces


def _address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listeners(pid: int) -> list[Listener]:
    """Return the listening TCP sockets of ``pid``, read in its own network namespace."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        nets = tuple(interfaces(pid))
        found = []
        for table in ("tcp", "tcp6"):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and f"socket:[{cols[9]}]" in links:  # 0A: LISTEN
                    host, port = cols[1].split(":")
                    found.append((name, _address(host), int(port, 16), nets))
        return found
    except OSError:  # the process ended meanwhile
        return []


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _watch(pid: int, seen: set[Listener], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for child in process_tree([pid]):
            seen.update(listeners(child))


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # a Ray cluster: one at a time
def test_ray_simulation_matches_the_embedded_engine_and_ray_is_loopback_only(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    sets = [arg for o in OVERRIDES for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "ilora", "flower", "simulate", "configs/smoke.yaml", *sets]
    cmd += ["--out", str(out), "--cpus", "2", "--timeout", "120"]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    proc = spawn(  # its own session; dies with this test process (flower.lifetime)
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: set[Listener] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(proc.pid, seen, stop), daemon=True)
    watcher.start()
    try:
        log, _ = proc.communicate(timeout=420)
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    watcher.join()
    assert proc.returncode == 0, log[-3000:]
    gcs = [port for name, _, port, _ in seen if name == "gcs_server"]
    assert gcs and any(name == "raylet" for name, *_ in seen), seen  # Ray's servers were seen
    assert all(_loopback(address) for _, address, _, _ in seen), seen
    assert all(nets == ("lo",) for *_, nets in seen), seen  # a network of its own
    assert all(_refused(port) for port in gcs)  # the attack: reach Ray's GCS from outside
    assert_matches_embedded(out)
