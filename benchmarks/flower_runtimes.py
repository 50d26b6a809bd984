"""One small workload on the three runtimes: wall time per round and peak memory, side by side.

The workload is ``configs/smoke.yaml`` with 3 clients (mixed ranks 2/4/2) and ``--rounds``
rounds, run by

- ``embedded``: ``ilora run`` (one process);
- ``simulation``: ``ilora flower simulate`` (Flower's Simulation Engine on Ray, 3 virtual
  SuperNodes, ``--cpus 2``);
- ``deployment``: Flower's Deployment Engine on 127.0.0.1 (``ilora.flower.loopback``): a
  SuperLink with TLS and SuperNode authentication, 3 registered SuperNodes with
  ``--isolation process`` and one long-lived ``ilora flower worker`` each (imports paid once
  per SuperNode), ``flwr run``. Its total time counts from starting the SuperLink to the end of
  ``flwr run``;
- ``deployment-per-message``: the same with Flower's default ``--isolation subprocess``: a new
  ClientApp process for every message (how the deployment ran before the worker).

Per run: the rounds' ``wall_s`` from ``history.jsonl`` (the server's round loop, the same
measure in all three), the whole command's wall time, and the peak over time of the summed
memory of every process involved (the command and all its descendants; for the deployment,
every component and every process they start), sampled every 0.2 s from ``/proc``: RSS, and PSS
(shared pages split between the processes sharing them, so a sum does not count them twice).
The runtimes take turns within each repeat, so a change in the machine's load hits all three.

Also timed, in a fresh Python: importing ``torch``, ``flwr.clientapp`` and
``ilora.flower.client``, and building the experiment (``ilora.engine.setup.build``, which
imports the task's model code): what a ClientApp process pays before its first training step.

Writes ``runs.csv`` (one row per run), ``rounds.csv`` (one row per run and round),
``imports.csv`` and ``meta.json`` to ``--out`` (default ``results/flower``; ``--quick``: 2
rounds, 1 repeat, into ``runs/quick/flower``). Scratch run directories go to ``--runs``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flower_runtimes.py`` (Linux: reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ilora.bench.resultfiles import write_results
from ilora.flower.app import write_app
from ilora.flower.certs import make_trial_credentials
from ilora.flower.loopback import LoopbackDeployment, process_tree

CONFIG = Path("configs/smoke.yaml")
CLIENTS = 3
RUNTIMES = ("embedded", "simulation", "deployment", "deployment-per-message")
IMPORTS = {
    "torch": "import torch",
    "flwr.clientapp": "import flwr.clientapp",
    "ilora.flower.client": "import ilora.flower.client",
    "ilora.flower.client + build": (
        "import ilora.flower.client; from ilora import config; from ilora.engine.setup import "
        f"build; build(config.load('{CONFIG}', ['data.num_clients={CLIENTS}']))"
    ),
}


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

    def __init__(self, pids: Callable[[], Iterable[int]], every: float = 0.2) -> None:
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
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0"})
    return env


def run_command(cmd: list[str], log: Path, timeout: float) -> tuple[float, PeakMemory]:
    """Run ``cmd`` in its own session; return its wall time and its memory peaks."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=child_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
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


def embedded(run_dir: Path, sets: list[str], timeout: float) -> tuple[float, PeakMemory]:
    cmd = [sys.executable, "-m", "ilora", "run", str(CONFIG), *_set_args(sets)]
    return run_command([*cmd, "--out", str(run_dir)], run_dir.with_suffix(".log"), timeout)


def simulation(run_dir: Path, sets: list[str], timeout: float) -> tuple[float, PeakMemory]:
    cmd = [sys.executable, "-m", "ilora", "flower", "simulate", str(CONFIG), *_set_args(sets)]
    cmd += ["--out", str(run_dir), "--cpus", "2", "--timeout", str(timeout)]
    return run_command(cmd, run_dir.with_suffix(".log"), timeout)


def deployment(
    run_dir: Path, sets: list[str], timeout: float, isolation: str = "process"
) -> tuple[float, PeakMemory]:
    root = run_dir.with_name(run_dir.name + "-deployment")
    shutil.rmtree(root, ignore_errors=True)
    creds = make_trial_credentials(root / "certs", nodes=CLIENTS, days=1)
    write_app(root / "app", CONFIG, sets)
    with LoopbackDeployment(root / "processes", creds, env=child_env()) as dep:
        with PeakMemory(dep.pids) as peak:
            t0 = time.perf_counter()
            dep.start_superlink()
            dep.register(pub for _, pub in creds.node_keys)
            for i, (key, _) in enumerate(creds.node_keys):
                dep.start_supernode(f"node-{i}", key, f"partition-id={i}", isolation)
            dep.run(root / "app", f'out="{run_dir.resolve()}"', timeout=timeout)
            wall = time.perf_counter() - t0
    return wall, peak


def _set_args(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def per_message(run_dir: Path, sets: list[str], timeout: float) -> tuple[float, PeakMemory]:
    return deployment(run_dir, sets, timeout, isolation="subprocess")


def time_imports(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for rep in range(repeats):
        for module, code in IMPORTS.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=child_env(), check=True)
            rows.append({"module": module, "repeat": rep, "seconds": time.perf_counter() - t0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 repeat")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench-flower"))
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    a = parser.parse_args()
    rounds, repeats = (2, 1) if a.quick else (a.rounds, a.repeats)
    out = a.out or Path("runs/quick/flower" if a.quick else "results/flower")
    sets = [f"data.num_clients={CLIENTS}", f"fed.rounds={rounds}"]
    started = os.getloadavg()[0]
    run_rows: list[dict[str, Any]] = []
    round_rows: list[dict[str, Any]] = []
    measure = {
        "embedded": embedded,
        "simulation": simulation,
        "deployment": deployment,
        "deployment-per-message": per_message,
    }
    for rep in range(repeats):
        for runtime in a.runtimes:
            run_dir = a.runs / f"{runtime}-{rep}"
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"repeat {rep}: {runtime} ...", flush=True)
            wall, peak = measure[runtime](run_dir, sets, a.timeout)
            history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
            summary = json.loads((run_dir / "summary.json").read_text())
            walls = [float(r["wall_s"]) for r in history]
            run_rows.append(
                {
                    "runtime": runtime,
                    "repeat": rep,
                    "clients": CLIENTS,
                    "rounds": len(history),
                    "round_wall_median_s": statistics.median(walls),
                    "round_wall_mean_s": statistics.fmean(walls),
                    "total_wall_s": wall,
                    "peak_rss_mb": peak.rss_kb / 1024,
                    "peak_pss_mb": peak.pss_kb / 1024,
                    "max_processes": peak.most,
                    "processes_seen": len(peak.seen),
                    "final_accuracy": summary["final_accuracy"],
                }
            )
            round_rows += [
                {"runtime": runtime, "repeat": rep, "round": r["round"], "wall_s": r["wall_s"]}
                for r in history
            ]
            print(f"  {run_rows[-1]}", flush=True)
    import_rows = time_imports(repeats)
    import flwr

    written = write_results(
        out,
        {"runs.csv": run_rows, "rounds.csv": round_rows, "imports.csv": import_rows},
        a.quick,
        launcher="OMP_NUM_THREADS=1 .venv/bin/python",
        flwr=flwr.__version__,
        workload=f"{CONFIG} " + " ".join(f"--set {s}" for s in sets),
        repeats=repeats,
        load_average_start=started,
        load_average_end=os.getloadavg()[0],
    )
    print(f"written: {out}/{', '.join(written)}")


if __name__ == "__main__":
    main()
