"""A child process that the kernel kills when its parent dies (Linux ``PR_SET_PDEATHSIG``).

Used between fork and exec for the servers the Flower runtime spawns (``flower.lifetime``) and
in the initializer of the protocol's worker processes (``bench.jobs``), so that neither outlives
the process that started it. Elsewhere than Linux :func:`die_with_parent` returns None.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    """Return libc's ``prctl`` on Linux (resolved in the parent: no loading after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that has the child killed when ``parent`` dies (None: unsupported).

    If the parent died before the request took effect the child exits at once.
    """
    prctl = _PRCTL
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
