"""Peak memory of a process tree over time, sampled from ``/proc`` in a thread (Linux).

RSS and PSS (shared pages split between the processes sharing them, so a sum does not count
them twice) of every process involved, summed, sampled every :data:`SAMPLE_EVERY_S` s;
:func:`run_command` runs a command in its own session and returns its wall time with those
peaks.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path

SAMPLE_EVERY_S = 0.2  # seconds between two samples of the process tree's memory


def memory_kb(pid: int) -> tuple[int, int]:
    """Return ``(RSS, PSS)`` of a process in kB (0, 0 once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0])
    return values.get("Rss", 0), values.get("Pss", 0)


class PeakMemory:
    """Sample the summed memory of ``pids()`` every ``every`` s in a thread; keep the peaks."""

    def __init__(self, pids: Callable[[], Iterable[int]], every: float = SAMPLE_EVERY_S) -> None:
        self.pids, self.every = pids, every
        self.rss_kb = self.pss_kb = self.most = 0
        self.seen: set[int] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:  # a peak from a sampler that stopped early is no peak
            raise RuntimeError("the memory sampler failed") from self.error

    def _loop(self) -> None:
        try:
            self._sample()
        except BaseException as err:  # noqa: BLE001  (re-raised in the measuring thread)
            self.error = err

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = set(self.pids())
            self.seen |= pids
            sizes = [memory_kb(pid) for pid in pids]
            self.rss_kb = max(self.rss_kb, sum(r for r, _ in sizes))
            self.pss_kb = max(self.pss_kb, sum(p for _, p in sizes))
            self.most = max(self.most, len(pids))
            self._stop.wait(self.every)


def child_env() -> dict[str, str]:
    """Return the environment of a measured command: one thread, no telemetry, every log line."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0"})
    return env


def run_command(cmd: list[str], log: Path, timeout: float) -> tuple[float, PeakMemory]:
    """Run ``cmd`` in its own session; return its wall time and its memory peaks.

    Raises:
        RuntimeError: if the command exits with an error (its output is in ``log``).

    """
    from ilora.flower.lifetime import spawn
    from ilora.flower.loopback import process_tree

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = spawn(cmd, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        with PeakMemory(lambda: process_tree([proc.pid])) as peak:
            try:
                code = proc.wait(timeout=timeout)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
                    proc.wait()
        wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"{cmd} failed (exit {code}); see {log}")
    return wall, peak
