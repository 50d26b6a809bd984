"""Real Simulation Engine runs (Ray backend): ILoRA, 4 virtual clients, mixed ranks.

``ilora flower simulate`` runs in its own process group (Ray's workers included) and is killed
with the group if it overruns. This file holds the Ray runs' helpers and the failed run: a run
whose round fails exits with code 3 and one line, no traceback. The ILoRA run that must equal
the embedded engine round by round is ``test_ray_network.py``'s (which also checks that Ray
listens on loopback only); SIGKILL and ``--resume`` are ``test_resume.py``'s, bitwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ilora import config as config_mod
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.flower.lifetime import spawn

OVERRIDES = ["algorithm=ilora", "data.local_test_fraction=0.2", "fed.rounds=2"]
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


def _start(*args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "ilora", "flower", "simulate", *args]
    cmd += ["--cpus", "2", "--timeout", "120"]
    return spawn(  # its own session; dies with this test process (flower.lifetime)
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 420) -> str:
    try:
        log, _ = proc.communicate(timeout=timeout)
    finally:
        _kill(proc)
    return log


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def assert_matches_embedded(out: Path) -> None:
    """Assert the run in ``out`` has the embedded engine's history and final accuracy."""
    cfg = config_mod.load("configs/smoke.yaml", OVERRIDES)
    assert len(set(cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed))) > 1
    embedded = run(cfg, exp=build(cfg))
    flower = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    want = [json.loads(json.dumps(r.to_json(), sort_keys=True)) for r in embedded.history.records]
    for rec in (*flower, *want):
        rec.pop("wall_s")
    assert flower == want
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_accuracy"] == embedded.history.final["accuracy"]


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # a Ray cluster: one at a time
def test_a_failed_simulation_exits_3_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "failed"
    proc = _start("configs/smoke.yaml", "--set", "faults.crash=1.0", "--out", str(out))
    log = _finish(proc)
    assert proc.returncode == 3, log[-3000:]
    assert "run failed: round 1: 0 of 4 sampled clients" in " ".join(log.split())
    assert "no checkpoint was written yet" in log and "Traceback" not in log
