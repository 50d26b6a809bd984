"""``ilora bench flower``: one small workload on the three runtimes, time and memory side by side.

The workload is ``configs/smoke.yaml`` with :data:`CLIENTS` clients (mixed ranks 2/4/2) and
``--rounds`` rounds, run by

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
memory of every process involved (:mod:`ilora.bench.flower.peak`). The runtimes take turns
within each repeat, so a change in the machine's load hits all three.

Also timed, in a fresh Python: importing ``torch``, ``flwr.clientapp`` and
``ilora.flower.client``, and building the experiment (``ilora.engine.setup.build``, which
imports the task's model code): what a ClientApp process pays before its first training step;
and importing, starting and stopping Ray as the simulation does (2 CPUs, in a private network):
the simulation's fixed start-up cost, partly hidden behind the driver's imports
(:mod:`ilora.flower.raystart`).

Writes ``runs.csv`` (one row per run), ``rounds.csv`` (one row per run and round),
``imports.csv`` and ``meta.json`` to ``--out`` (default ``results/flower``; ``--quick``: 2
rounds, 1 repeat, into ``runs/quick/flower``). Scratch run directories go to ``--runs``.

Run: ``OMP_NUM_THREADS=1 ilora bench flower`` (Linux: reads /proc).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilora.bench.flower.peak import SAMPLE_EVERY_S
from ilora.bench.flower.peak import PeakMemory
from ilora.bench.flower.peak import child_env
from ilora.bench.flower.peak import run_command

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
    "ray start + stop (2 CPUs, private network)": (
        "from ilora.flower.netns import isolate; isolate(); import ray; "
        "ray.init(num_cpus=2, include_dashboard=False, logging_level='WARNING'); ray.shutdown()"
    ),
}
Measure = Callable[[Path, list[str], float], tuple[float, PeakMemory]]
Row = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What one invocation measures (see the module docstring)."""

    rounds: int = 5
    repeats: int = 3
    timeout: float = 1800.0
    quick: bool = False
    out: Path | None = None
    runs: Path = Path("runs/bench-flower")
    runtimes: tuple[str, ...] = RUNTIMES


def check_plan(plan: Plan) -> None:
    """Reject a plan naming an unknown runtime.

    Raises:
        ValueError: naming the runtime and the known ones.

    """
    unknown = [r for r in plan.runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")


def _set_args(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def embedded(run_dir: Path, sets: list[str], timeout: float) -> tuple[float, PeakMemory]:
    """Run the workload with ``ilora run``."""
    cmd = [sys.executable, "-m", "ilora", "run", str(CONFIG), *_set_args(sets)]
    return run_command([*cmd, "--out", str(run_dir)], run_dir.with_suffix(".log"), timeout)


def simulation(run_dir: Path, sets: list[str], timeout: float) -> tuple[float, PeakMemory]:
    """Run the workload with ``ilora flower simulate`` (Ray, 2 CPUs)."""
    cmd = [sys.executable, "-m", "ilora", "flower", "simulate", str(CONFIG), *_set_args(sets)]
    cmd += ["--out", str(run_dir), "--cpus", "2", "--timeout", str(timeout)]
    return run_command(cmd, run_dir.with_suffix(".log"), timeout)


def deployment(
    run_dir: Path, sets: list[str], timeout: float, isolation: str = "process"
) -> tuple[float, PeakMemory]:
    """Run the workload on a loopback Deployment Engine with SuperNode ``isolation``."""
    from ilora.flower.app import write_app
    from ilora.flower.certs import make_trial_credentials
    from ilora.flower.loopback import LoopbackDeployment

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


def per_message(run_dir: Path, sets: list[str], timeout: float) -> tuple[float, PeakMemory]:
    """Run the workload on the Deployment Engine with a new ClientApp process per message."""
    return deployment(run_dir, sets, timeout, isolation="subprocess")


MEASURE: dict[str, Measure] = {
    "embedded": embedded,
    "simulation": simulation,
    "deployment": deployment,
    "deployment-per-message": per_message,
}


def time_imports(repeats: int) -> list[Row]:
    """Return the seconds of each :data:`IMPORTS` snippet in a fresh Python, per repeat."""
    rows: list[Row] = []
    for rep in range(repeats):
        for module, code in IMPORTS.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=child_env(), check=True)
            rows.append({"module": module, "repeat": rep, "seconds": time.perf_counter() - t0})
    return rows


def measure(runtime: str, rep: int, run_dir: Path, sets: list[str], timeout: float) -> Row:
    """Run the workload once on ``runtime``; return its ``runs.csv`` row with its ``history``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"repeat {rep}: {runtime} ...", flush=True)
    wall, peak = MEASURE[runtime](run_dir, sets, timeout)
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    walls = [float(r["wall_s"]) for r in history]
    return {
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
        "history": history,
    }


def messages_per_round(sets: list[str]) -> float:
    """Return the mean messages per SuperNode per round: ``train``, and ``evaluate`` when due."""
    from ilora import config

    cfg = config.load(CONFIG, sets)
    rounds = cfg.fed.rounds
    return 1 + sum(cfg.eval.due(r, rounds)[1] for r in range(1, rounds + 1)) / rounds


def run(plan: Plan) -> list[Path]:
    """Measure every runtime ``repeats`` times, write the result files; return their paths."""
    import flwr

    from ilora.bench.resultfiles import results_dir
    from ilora.bench.resultfiles import thread_launcher
    from ilora.bench.resultfiles import write_results

    rounds, repeats = (2, 1) if plan.quick else (plan.rounds, plan.repeats)
    out = results_dir("flower", plan.quick, plan.out)
    sets = [f"data.num_clients={CLIENTS}", f"fed.rounds={rounds}"]
    started = os.getloadavg()[0]
    run_rows: list[Row] = []
    round_rows: list[Row] = []
    for rep in range(repeats):
        for runtime in plan.runtimes:
            row = measure(runtime, rep, plan.runs / f"{runtime}-{rep}", sets, plan.timeout)
            round_rows += [
                {"runtime": runtime, "repeat": rep, "round": r["round"], "wall_s": r["wall_s"]}
                for r in row.pop("history")
            ]
            run_rows.append(row)
            print(f"  {row}", flush=True)
    names = write_results(
        out,
        {"runs.csv": run_rows, "rounds.csv": round_rows, "imports.csv": time_imports(repeats)},
        plan.quick,
        launcher=thread_launcher(),
        flwr=flwr.__version__,
        workload=f"{CONFIG} " + " ".join(f"--set {s}" for s in sets),
        clients=CLIENTS,
        rounds=rounds,
        repeats=repeats,
        memory_sample_every_s=SAMPLE_EVERY_S,
        messages_per_round=messages_per_round(sets),
        load_average_start=started,
        load_average_end=os.getloadavg()[0],
    )
    return [out / name for name in names]
