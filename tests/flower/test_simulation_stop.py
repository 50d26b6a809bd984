"""``ilora flower simulate`` ends when its ServerApp does, even with ClientApp calls in flight.

A script runs the CLI (Ray on the host network, 3 virtual SuperNodes, ``--timeout 2``) with
its ClientApp replaced by one that takes 10 minutes to answer the handshake. The ServerApp gives
up after 2 s; flwr's engine would wait for the Ray actors (the command used to hang). The
command must exit with code 3, print its reason once as one line and no traceback, and leave no
process behind: every process it started carries a marker in its environment, and none may
remain. The script runs in a session of its own and dies with this test (``flower.lifetime``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ilora.flower.lifetime import spawn

SCRIPT = """
import sys, time
from flwr.clientapp import ClientApp
import ilora.flower.client
from ilora.cli import app

def slow_client_app(state_dir=None):
    slow = ClientApp()

    @slow.query()
    def _never_in_time(msg, context):
        time.sleep(600)  # far past the ServerApp's 2-s reply timeout

    return slow

ilora.flower.client.make_client_app = slow_client_app
sys.argv = ["ilora", *sys.argv[1:]]
app()
"""


def _marked(marker: str) -> list[int]:
    """Return the live processes whose environment holds ``marker`` (this user's)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue  # ended meanwhile, or not ours
    return found


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # a Ray cluster: one at a time
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_handshake_timeout_exits_3_at_once_and_leaves_no_process(tmp_path: Path) -> None:
    value = secrets.token_hex(12)  # inherited by every process the command starts
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env["ILORA_TEST_MARKER"] = value
    cmd = [sys.executable, "-c", SCRIPT, "flower", "simulate", "configs/smoke.yaml"]
    cmd += ["--set", "data.num_clients=3", "--out", str(tmp_path / "run")]
    cmd += ["--timeout", "2", "--cpus", "2", "--ray-network", "host"]
    proc = spawn(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=300)  # the old code waited the 600 s of the sleep
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 3, log[-3000:]
    failed = [line for line in log.splitlines() if "run failed" in line]
    assert len(failed) == 1 and failed[0].startswith("run failed: 3 connected node(s)"), log
    assert "did not answer the handshake within the 2-s reply timeout" in failed[0]
    assert "raise the timeout (ilora flower simulate --timeout" in failed[0]
    assert "Traceback" not in log
    assert (tmp_path / "run" / "failure.txt").read_text().strip() in failed[0]
    deadline = time.monotonic() + 20  # SIGKILLed processes may take a moment to go
    while (left := _marked(value)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}"
