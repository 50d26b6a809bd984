"""Resident memory of this process on Linux: what a benchmark can see of torch's allocations.

``tracemalloc`` sees only Python's allocator, not torch's tensors, so the benchmarks read the
kernel's counters in ``/proc/self/status`` instead: ``VmRSS`` (resident now) and ``VmHWM`` (the
high-water mark). Writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0) resets ``VmHWM`` to
``VmRSS``, so the peak *extra* memory of one call is the growth of ``VmHWM`` around it.

For that growth to track live tensors, freed blocks must go back to the kernel: a process started
with :data:`TRACKING_ENV` has glibc's mmap threshold fixed at 64 KiB (its dynamic threshold would
keep large freed blocks resident) and no MKL buffer cache. ``worker_env`` builds that environment
for a child process; the variables only take effect at process start.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TRACKING_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MKL_DISABLE_FAST_MM": "1"}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1])


def current_rss() -> int:
    """Return the resident set size in bytes (``VmRSS``; Linux only)."""
    return _status_kb("VmRSS") * 1024


def peak_rss() -> int:
    """Return the peak resident set size in bytes since start or the last reset (``VmHWM``)."""
    return _status_kb("VmHWM") * 1024


def reset_peak() -> None:
    """Reset the high-water mark ``VmHWM`` to the current ``VmRSS``."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_extra(fn: Callable[[], T]) -> tuple[T, int]:
    """Return ``fn()`` and the peak resident bytes it added above the resident set before it.

    Garbage is collected first and the high-water mark reset, so the figure covers this call
    only. The result is kept alive until the measurement ends, as a caller would keep it.
    """
    gc.collect()
    reset_peak()
    before = peak_rss()
    out = fn()
    # the kernel may reclaim pages counted in ``before`` during the call (a busy machine):
    # a call cannot add less than nothing, so a drop is reported as no extra memory
    return out, max(0, peak_rss() - before)


def worker_env(threads: int) -> dict[str, str]:
    """Return the environment of a measuring child: tracking malloc settings, ``threads`` BLAS."""
    env = {**os.environ, **TRACKING_ENV}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env
