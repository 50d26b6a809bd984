"""Processes on this machine: free loopback ports, process trees from ``/proc``, signals.

:mod:`ilora.flower.loopback` starts Flower's components as separate processes, and Flower's
components start processes of their own (some in sessions of their own); these helpers find
all of them and end them.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

HOST = "127.0.0.1"


def tool(name: str) -> str:
    """Return the path of a console script installed next to this Python (flwr's commands)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _processes() -> dict[int, tuple[int, int]]:
    """Return ``{pid: (parent pid, process group)}`` of every live process in ``/proc``."""
    found: dict[int, tuple[int, int]] = {}
    if not Path("/proc").is_dir():
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie has ended already
            found[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return found


def process_tree(roots: Iterable[int]) -> set[int]:
    """Return the live processes of ``roots``: their descendants and their process groups.

    Each root leads its own process group (``start_new_session``), so the members of that
    group count too: a child whose parent has ended is adopted by init but stays in the group.
    """
    table, roots = _processes(), set(roots)
    return _with_descendants(
        table, [p for p, (_, group) in table.items() if p in roots or group in roots]
    )


def descendants(pid: int) -> set[int]:
    """Return the live processes ``pid`` started, their children and so on (not ``pid``).

    Unlike :func:`process_tree`, nothing joins for sharing ``pid``'s process group (a shell's
    pipeline shares it). Empty without ``/proc``.
    """
    return _with_descendants(_processes(), [pid]) - {pid}


def _with_descendants(table: dict[int, tuple[int, int]], starts: list[int]) -> set[int]:
    """Return ``starts`` and every descendant of them in ``table``."""
    kids: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        kids[ppid].append(pid)
    todo, seen = list(starts), set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(kids.get(pid, []))
    return seen


def _alive(pid: int) -> bool:
    """Return whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        if Path("/proc").is_dir():
            return False
    try:  # no /proc: ask the kernel
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _signal(pids: Iterable[int], sig: signal.Signals, groups: Iterable[int] = ()) -> None:
    """Send ``sig`` to each process of ``pids`` and each process group of ``groups``."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for group in groups:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
