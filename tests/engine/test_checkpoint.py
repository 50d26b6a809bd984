"""Checkpoints: atomic, checksummed, and a resumed run is bitwise the uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ilora import config
from ilora.engine import checkpoint
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.checkpoint import CheckpointError
from ilora.engine.checkpoint import decode
from ilora.engine.checkpoint import encode
from ilora.engine.checkpoint import load_latest
from ilora.engine.history import RoundRecord
from ilora.engine.simulation import run

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


def _ckpt(rnd: int) -> Checkpoint:
    record = RoundRecord(rnd, "fedit", 10, 20, 0.1, {"sampled": 2}, {"accuracy": 0.5})
    state = {"w": torch.full((2, 3), float(rnd))}
    return Checkpoint(rnd, state, {0: {"x": torch.ones(2)}}, [record], torch.get_rng_state())


def test_a_checkpoint_round_trips_and_any_damage_is_detected() -> None:
    data = encode(_ckpt(3))
    back = decode(data, "c")
    assert back.round == 3 and torch.equal(back.state["w"], torch.full((2, 3), 3.0))
    assert back.records == _ckpt(3).records
    with pytest.raises(CheckpointError, match="checksum"):
        decode(data[:-7], "c")  # truncated
    flipped = bytearray(data)
    flipped[-20] ^= 0x01
    with pytest.raises(CheckpointError, match="checksum"):
        decode(bytes(flipped), "c")
    with pytest.raises(CheckpointError, match="not an ilora checkpoint"):
        decode(b"garbage", "c")


def test_only_the_newest_two_are_kept_and_a_corrupt_one_falls_back(tmp_path: Path) -> None:
    for r in (1, 2, 3):
        checkpoint.save(tmp_path, _ckpt(r))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-00002.ckpt", "round-00003.ckpt"]
    newest = tmp_path / "round-00003.ckpt"
    newest.write_bytes(newest.read_bytes()[:-100])  # a torn write
    ckpt, skipped = load_latest(tmp_path)
    assert ckpt is not None and ckpt.round == 2
    assert len(skipped) == 1 and "round-00003.ckpt" in skipped[0] and "checksum" in skipped[0]
    (tmp_path / "round-00002.ckpt").write_bytes(b"")
    assert load_latest(tmp_path)[0] is None


def _comparable(records: list[RoundRecord]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.to_json().items() if k != "wall_s"} for r in records]


@pytest.mark.parametrize(
    ("algorithm", "precision"), [("ilora-s", "fp32"), ("fedsa-lora", "fp32"), ("ilora-s", "bf16")]
)
def test_resuming_from_any_round_gives_the_uninterrupted_result(
    algorithm: str, precision: str
) -> None:
    """Stateful server and clients (ILoRA-S's control variates, FedSA-LoRA's local B)."""
    overrides = [f"algorithm={algorithm}", "fed.rounds=4", "fed.fraction=0.5"]
    overrides.append(f"train.precision={precision}")
    cfg = config.load(SMOKE, [*overrides, "data.local_test_fraction=0.25"])
    saved: list[bytes] = []
    full = run(cfg, on_checkpoint=lambda c: saved.append(encode(c)))
    assert len(saved) == 4
    for k in (1, 2, 3):
        resumed = run(cfg, resume=decode(saved[k - 1], f"round {k}"))
        assert _comparable(resumed.history.records) == _comparable(full.history.records)
        assert resumed.setup.factors.keys() == full.setup.factors.keys()
        for key, value in full.setup.factors.items():
            assert torch.equal(resumed.setup.factors[key], value), key


def _cli(*args: str | Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    cmd = [sys.executable, "-m", "ilora", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _run_files(out: Path) -> dict[str, object]:
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("wall_s")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    for h in history:
        h.pop("wall_s")
    adapter = {p.name: p.read_bytes() for p in sorted((out / "adapter").iterdir())}
    return {"summary": summary, "history": history, "adapter": adapter}


@pytest.mark.slow
def test_sigkill_at_three_random_points_then_resume_is_bitwise_the_clean_run(
    tmp_path: Path,
) -> None:
    rounds = 10
    args = ["--set", f"fed.rounds={rounds}", "--set", "train.steps=20", "--set", "fed.fraction=0.5"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _finish(_cli("run", SMOKE, *args, "--out", clean))
    rng = random.Random(7)
    points = sorted(rng.sample(range(1, rounds - 1), 3))  # kill after these many rounds
    proc = _cli("run", SMOKE, *args, "--out", killed)
    for point in points:
        deadline = time.monotonic() + 240
        while _lines(killed / "history.jsonl") < point and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))  # anywhere in the next round, or mid-checkpoint
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (killed / "summary.json").exists()
        proc = _cli("run", "--resume", killed)
    _finish(proc)
    assert _run_files(killed) == _run_files(clean)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert len(manifest["resumed"]) == 3


def test_resume_refuses_a_config_and_reports_a_missing_directory(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ilora.cli import app

    runner = CliRunner()
    both = runner.invoke(app, ["run", str(SMOKE), "--resume", str(tmp_path)])
    assert both.exit_code == 2 and "drop CONFIG" in " ".join(both.output.split())
    missing = runner.invoke(app, ["run", "--resume", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "config.yaml" in "".join(missing.output.split())
    assert "Traceback" not in missing.output
