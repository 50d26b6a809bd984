"""Spawned processes that never outlive the process that spawned them.

Flower's servers (SuperLink, SuperNodes), our ``ilora flower worker`` and ``ilora flower
simulate`` (with its Ray cluster) run as separate processes, and some of them start processes
of their own in sessions of their own (the SuperLink's SuperExec). A parent that ends without
stopping them (a test that times out, a runner killed with SIGKILL) used to leave them running.
:func:`spawn` starts a command so that it and everything it starts end with the parent:

1. the child asks the kernel for SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG,
   SIGKILL)`` between fork and exec, set only from the main thread: the kernel ties it to the
   spawning *thread*);
2. a watchdog process (``python -m ilora.flower.lifetime``, in a session of its own so that a
   signal to the parent's process group spares it) holds a pipe from the parent and, every
   :data:`TICK` seconds, notes every process of the spawned trees (``processes.process_tree``,
   start times against pid reuse). When the pipe closes (the parent ended, however) it kills
   every noted process still running, grandchildren in other sessions included;
3. at a normal interpreter exit (``atexit``) the parent kills what it spawned itself.

Elsewhere than Linux only 2 and 3 hold, and without ``/proc`` the watchdog reaches the spawned
process groups only.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import NoReturn

from ilora.flower.processes import _signal
from ilora.flower.processes import descendants
from ilora.flower.processes import process_tree
from ilora.parentdeath import die_with_parent

TICK = 0.5  # seconds between two notes of the watched process trees


class _Watchdog:
    """The parent's end of the watchdog process: told the pid of every spawned process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned: dict[int, str | None] = {}  # pid -> start time

    def watch(self, pid: int) -> None:
        """Have the watchdog kill ``pid``'s tree when this process ends."""
        with self.lock:
            self.spawned[pid] = _start_time(pid)
            try:
                if self.proc is None or self.proc.poll() is not None:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-m", "ilora.flower.lifetime"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,  # holds no pipe of whoever reads our output
                        stderr=subprocess.DEVNULL,
                        start_new_session=os.name == "posix",
                        env=_child_env(),
                    )
                assert self.proc.stdin is not None
                self.proc.stdin.write(f"{pid}\n".encode())
                self.proc.stdin.flush()
            except OSError:
                pass  # no watchdog: the death signal and the exit handler still hold

    def kill_spawned(self) -> None:
        """Kill every process this process spawned and what they started (exit handler)."""
        _kill_noted(dict(self.spawned), self.spawned)


def _child_env() -> dict[str, str]:
    """Return the environment with this package importable (as in this process)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


_WATCHDOG = _Watchdog()
atexit.register(_WATCHDOG.kill_spawned)


def spawn(cmd: Sequence[str], new_session: bool = True, **popen: Any) -> subprocess.Popen[Any]:
    """Return ``subprocess.Popen(cmd, **popen)`` bound to this process.

    The process and every process it starts end when this process ends (module docstring).
    ``new_session``: start it in a session of its own (a server: the terminal's Ctrl-C and a
    signal to our process group do not reach it; kill its group to end it earlier); False for
    a command in the foreground of an interactive CLI.
    """
    posix = os.name == "posix"
    preexec = die_with_parent(os.getpid()) if posix else None
    session = posix and new_session
    proc = subprocess.Popen(list(cmd), start_new_session=session, preexec_fn=preexec, **popen)
    _WATCHDOG.watch(proc.pid)
    return proc


def exit_now(code: int) -> NoReturn:
    """End this process with ``code`` at once, after killing every process it started.

    For a process whose threads wait on what it started (Flower's Simulation Engine waiting on
    a Ray actor, :mod:`ilora.flower.simulate`): nothing is joined, no exit handler runs. Its
    descendants get SIGKILL; the watchdog, spared, then ends what was spawned but moved away.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    watchdog = _WATCHDOG.proc.pid if _WATCHDOG.proc is not None else None
    _signal(descendants(os.getpid()) - {watchdog}, signal.SIGKILL)
    os._exit(code)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _live(noted: dict[int, str | None]) -> list[int]:
    """Return the noted pids that still run the process noted (not a reused pid).

    Without ``/proc`` no start time is known, so no pid counts (only process groups are hit).
    """
    return [pid for pid, start in noted.items() if start is not None and _start_time(pid) == start]


def _kill_noted(noted: dict[int, str | None], roots: dict[int, str | None]) -> None:
    """SIGKILL the live trees of ``roots``, every noted process still running, the groups."""
    for pid in process_tree(_live(roots)):
        noted.setdefault(pid, _start_time(pid))
    if noted or roots:
        _signal(_live(noted), signal.SIGKILL, list(roots))


def watchdog_main() -> None:
    """Read pids from stdin; note their trees; at end of input kill whatever still runs."""
    roots: dict[int, str | None] = {}  # the spawned processes, with their start times
    noted: dict[int, str | None] = {}
    pending = b""
    while True:
        if select.select([0], [], [], TICK)[0]:
            chunk = os.read(0, 4096)
            if not chunk:
                break  # the parent has ended (or closed the pipe)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            roots.update({int(x): _start_time(int(x)) for x in lines if x.strip().isdigit()})
        noted = {pid: noted[pid] for pid in _live(noted)}
        noted.update({p: _start_time(p) for p in process_tree(_live(roots)) if p not in noted})
    _kill_noted(noted, roots)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the terminal is the parent's
    watchdog_main()
