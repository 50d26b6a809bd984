"""Checkpoints cannot carry code: pickles are refused, and every server state round-trips."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from conftest import TinySetup
from conftest import run_rounds
from ilora.algorithms.base import ALGORITHMS
from ilora.engine import serial
from ilora.engine.checkpoint import MAGIC
from ilora.engine.checkpoint import PICKLE_MAGIC
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.checkpoint import CheckpointError
from ilora.engine.checkpoint import UnsafeCheckpointError
from ilora.engine.checkpoint import decode
from ilora.engine.checkpoint import encode
from ilora.engine.history import RoundRecord

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this calls ``open(target, "w")``: the file appears if the pickle is loaded."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.target), "w"))


def _bits(t: torch.Tensor) -> bytes:
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).tolist())


def _framed(magic: bytes, payload: bytes) -> bytes:
    return magic + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def test_a_crafted_pickle_checkpoint_is_refused_on_resume_and_runs_nothing(
    tmp_path: Path,
) -> None:
    """The attack: a valid-checksum old-format checkpoint whose unpickling creates a file."""
    from ilora.cli import app

    run_dir, target = tmp_path / "run", tmp_path / "pwned"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text((ROOT / "configs" / "smoke.yaml").read_text())
    crafted = _framed(PICKLE_MAGIC, pickle.dumps(_Payload(target)))
    (run_dir / "checkpoints" / "round-00001.ckpt").write_bytes(crafted)
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert not target.exists(), "loading the checkpoint ran the attacker's code"
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if "error" in line]
    assert len(error) == 1 and "round-00001.ckpt" in error[0] and "pickle" in error[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("prefix", [b"", PICKLE_MAGIC])
def test_any_pickle_is_refused_before_it_is_read(prefix: bytes, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    raw = pickle.dumps(_Payload(target))
    data = _framed(prefix, raw) if prefix else raw
    with pytest.raises(UnsafeCheckpointError, match="c.ckpt is a pickle"):
        decode(data, "c.ckpt")
    assert not target.exists()


def test_a_payload_naming_a_type_outside_the_allow_list_is_refused() -> None:
    head = json.dumps({"dataclass": "os.system", "fields": {"command": "touch /tmp/x"}}).encode()
    payload = struct.pack("<Q", len(head)) + head + serial.save_tensors({})
    with pytest.raises(CheckpointError, match="'os.system' is not allowed"):
        decode(_framed(MAGIC, payload), "c.ckpt")


def test_tensors_keep_dtype_shape_and_bits_and_shared_storage_is_saved() -> None:
    base = torch.randn(4, 6, dtype=torch.float64)
    values = {
        "view": base[1:3],
        "same": base,
        "half": torch.randn(3).to(torch.bfloat16),
        "int": torch.arange(5),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(float("nan")),
    }
    rng = torch.get_rng_state()
    record = RoundRecord(1, "x", 1, 2, 0.5, {"sampled": 2}, {"loss": float("inf")}, [{"a": 1}])
    ckpt = Checkpoint(1, {"t": values, 3: (1.5, frozenset({2, 1}))}, {0: {}}, [record], rng)
    back = decode(encode(ckpt), "c")
    for key, t in values.items():
        got = back.state["t"][key]
        assert got.dtype == t.dtype and got.shape == t.shape
        assert _bits(got) == _bits(t), key
    assert back.state[3] == (1.5, frozenset({1, 2})) and back.records == [record]
    assert torch.equal(back.rng, rng)


def _assert_same(a: object, b: object, where: str) -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert _bits(a) == _bits(b), where
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):  # type: ignore[arg-type]
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithms_server_state_round_trips_bitwise(
    name: str, tiny_setup: TinySetup
) -> None:
    res = run_rounds(name, tiny_setup, rounds=3)
    ckpt = Checkpoint(3, res.state, {}, [], torch.get_rng_state())
    _assert_same(decode(encode(ckpt), name).state, res.state, name)
