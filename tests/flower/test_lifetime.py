"""Spawned servers never outlive their parent, even when the parent is killed with SIGKILL.

Each test starts a *parent* Python process that spawns processes the way the project does
(:func:`ilora.flower.lifetime.spawn`, :class:`~ilora.flower.loopback.LoopbackDeployment`,
``ilora flower simulate``), kills the parent with SIGKILL once they run (no ``finally``, no
exit handler gets to run) and asserts that every process the parent had started, its
grandchildren in sessions of their own included, is gone within a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ilora.flower.lifetime import spawn
from ilora.flower.processes import _alive

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}
pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process trees in /proc")


def _parent(script: str, cwd: Path) -> subprocess.Popen[str]:
    """Start ``script`` as the parent, in a session of its own (bound to this test process)."""
    return spawn(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path: Path, parent: subprocess.Popen[str], timeout: float) -> str:
    """Return ``path``'s content once the parent wrote it (it writes it last, then sleeps)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if parent.poll() is not None or time.monotonic() > deadline:
            _kill_group(parent)
            out = parent.stdout.read() if parent.stdout else ""
            pytest.fail(f"the parent did not get ready (exit {parent.returncode}):\n{out[-3000:]}")
        time.sleep(0.2)
    return path.read_text()


def _kill_group(parent: subprocess.Popen[str]) -> None:
    if parent.poll() is None:
        os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()


def _survivors(pids: set[int], timeout: float) -> set[int]:
    """Return the processes of ``pids`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _kill_parent_and_check(parent: subprocess.Popen[str], children: set[int]) -> None:
    """SIGKILL the parent alone; assert that ``children`` all end; clean up if they do not."""
    assert children and all(_alive(p) for p in children)
    os.kill(parent.pid, signal.SIGKILL)  # the parent only: not its group, not its children
    parent.wait()
    left = _survivors(children, timeout=30)
    for pid in left:  # do not leave them running for the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"orphans: {left}"


def test_a_spawned_process_and_its_grandchild_in_another_session_die_with_the_parent(
    tmp_path: Path,
) -> None:
    """The SuperLink's pattern: a child that starts a grandchild in a session of its own."""
    child = (
        "import subprocess, sys, time; "
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
        "start_new_session=True); "
        "open('grandchild', 'w').write(str(g.pid)); time.sleep(300)"
    )
    script = f"""
        import sys, time
        from pathlib import Path
        from ilora.flower.lifetime import spawn
        proc = spawn([sys.executable, '-c', {child!r}])
        while not Path('grandchild').exists():
            time.sleep(0.05)
        time.sleep(2 * 0.5 + 0.5)  # the watchdog notes the tree every 0.5 s
        Path('ready').write_text(str(proc.pid))
        time.sleep(300)
    """
    parent = _parent(script, tmp_path)
    try:
        pid = int(_wait_for(tmp_path / "ready", parent, timeout=60))
        grandchild = int((tmp_path / "grandchild").read_text())
        assert os.getsid(grandchild) != os.getsid(pid)  # out of reach of a group kill
        _kill_parent_and_check(parent, {pid, grandchild})
    finally:
        _kill_group(parent)


@pytest.mark.slow
@pytest.mark.xdist_group("deployment")  # a loopback deployment: one at a time
def test_a_killed_parent_takes_its_flower_deployment_with_it(tmp_path: Path) -> None:
    """SuperLink (and its SuperExec), a registered SuperNode and its worker, on 127.0.0.1."""
    script = """
        import json, time
        from pathlib import Path
        from ilora.flower.certs import make_trial_credentials
        from ilora.flower.loopback import LoopbackDeployment
        creds = make_trial_credentials(Path('certs'), nodes=1, days=1)
        dep = LoopbackDeployment(Path('deployment'), creds)  # never stopped: the parent dies
        dep.start_superlink(timeout=180)
        dep.register([creds.node_keys[0][1]], timeout=180)
        dep.start_supernode('node-0', creds.node_keys[0][0], 'partition-id=0', 'process')
        time.sleep(8)  # the SuperNode and its worker connect
        Path('ready').write_text(json.dumps(sorted(dep.pids())))
        time.sleep(600)
    """
    parent = _parent(script, tmp_path)
    try:
        pids = set(json.loads(_wait_for(tmp_path / "ready", parent, timeout=300)))
        sessions = {os.getsid(p) for p in pids if _alive(p)}
        assert len(sessions) >= 4  # superlink, its SuperExec, the SuperNode, the worker
        _kill_parent_and_check(parent, pids)
    finally:
        _kill_group(parent)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # a Ray cluster: one at a time
def test_a_killed_parent_takes_the_ray_simulation_with_it(tmp_path: Path) -> None:
    """``ilora flower simulate`` (its Ray head and workers) started by a parent that is killed."""
    config = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
    cmd = [sys.executable, "-m", "ilora", "flower", "simulate", str(config)]
    cmd += ["--set", "fed.rounds=50", "--out", str(tmp_path / "run"), "--cpus", "2"]
    script = f"""
        import subprocess, time
        from pathlib import Path
        from ilora.flower.lifetime import spawn
        from ilora.flower.processes import process_tree
        proc = spawn({cmd!r}, stdout=open('sim.log', 'wb'), stderr=subprocess.STDOUT)
        def names():
            found = set()
            for pid in process_tree([proc.pid]):
                try:
                    found.add(Path('/proc', str(pid), 'comm').read_text().strip())
                except OSError:
                    pass
            return found
        while not ({{'gcs_server', 'raylet'}} <= (now := names())
                   and any(n.startswith('ray::') for n in now)):  # Ray's workers run
            time.sleep(0.5)
        time.sleep(2)  # the watchdog notes the tree every 0.5 s
        Path('ready').write_text(' '.join(map(str, sorted(process_tree([proc.pid])))))
        time.sleep(600)
    """
    parent = _parent(script, tmp_path)
    try:
        pids = {int(p) for p in _wait_for(tmp_path / "ready", parent, timeout=400).split()}
        alive = {p for p in pids if _alive(p)}  # Ray starts and ends short-lived helpers
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in alive if _alive(p)}
        assert {"gcs_server", "raylet"} <= names, names  # Ray's servers and workers were running
        _kill_parent_and_check(parent, {p for p in alive if _alive(p)})
    finally:
        _kill_group(parent)
