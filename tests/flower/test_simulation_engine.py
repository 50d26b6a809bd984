"""One real Simulation Engine run (Ray backend): ILoRA, 4 virtual clients, mixed ranks.

``ilora flower simulate`` runs in its own process group (Ray's workers included) and is killed
with the group if it overruns; its history must equal the embedded engine's, round by round.
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

OVERRIDES = ["algorithm=ilora", "data.local_test_fraction=0.2", "fed.rounds=2"]


@pytest.mark.slow
@pytest.mark.xdist_group("servers")  # a Ray cluster: never beside another test's servers
def test_ray_simulation_matches_the_embedded_engine(tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = [arg for o in OVERRIDES for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "ilora", "flower", "simulate", "configs/smoke.yaml", *sets]
    cmd += ["--out", str(out), "--cpus", "2", "--timeout", "120"]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log[-3000:]
    cfg = config_mod.load("configs/smoke.yaml", OVERRIDES)
    assert len(set(cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed))) > 1
    assert cfg.data.num_clients == 4
    embedded = run(cfg, exp=build(cfg))
    flower = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    want = [json.loads(json.dumps(r.to_json(), sort_keys=True)) for r in embedded.history.records]
    for rec in (*flower, *want):
        rec.pop("wall_s")
    assert flower == want
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_accuracy"] == embedded.history.final["accuracy"]
