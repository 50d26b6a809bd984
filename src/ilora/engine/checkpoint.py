"""Round checkpoints: the whole state of a run after a round, atomic and checksummed.

A checkpoint holds the round number, the algorithm's server state, every client's state, the
history records so far, the global torch RNG state and the sampling seed (the engine derives
every other random draw from named seeds, so resuming needs nothing else). One file per round,
``checkpoints/round-<NNNNN>.ckpt``: a magic line, the SHA-256 of the payload in hex, a newline,
then the payload of :mod:`ilora.engine.serial`: the structure in JSON, the tensors in
safetensors, and dataclasses only from an explicit allow-list. Files are written to a temporary
name, fsync'd and renamed, and the directory is fsync'd, so a crash leaves either the old or the
new file, never half of one. The newest ``keep`` files are kept; :func:`load_latest` skips (and
reports) a file whose checksum does not match and falls back to the previous one.

Nothing is unpickled: a file in the old pickle format (``ILORA-CHECKPOINT-1``) or any other
pickle is refused with :class:`UnsafeCheckpointError` (one line naming the file and the fix)
rather than skipped, since it is not damage but a file this program did not write; a crafted
JSON part can only name allowed types, so loading a checkpoint never runs code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ilora.engine import serial
from ilora.engine.history import RoundRecord
from ilora.engine.history import write_bytes_atomic
from ilora.types import TensorDict

MAGIC = b"ILORA-CHECKPOINT-2\n"
PICKLE_MAGIC = b"ILORA-CHECKPOINT-1\n"  # the old format: a torch.save pickle
DIGEST_HEX = 64  # SHA-256 in hex


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (bad header, checksum or content)."""


class UnsafeCheckpointError(CheckpointError, ValueError):
    """A checkpoint in a format that can carry code (a pickle): refused, never loaded."""


@dataclass(frozen=True)
class Checkpoint:
    """The state of a run after round ``round``.

    ``store`` holds every client's state under ``fed.client_store: memory``. Under ``disk`` it
    is empty and ``store_index`` names this round's client-state files instead
    (``engine.clientstore.DiskStore.snapshot``: JSON-ready ints and lists of ints; the files
    stay in the run directory's ``client-state/``), so a checkpoint never copies the states.
    """

    round: int
    state: Any
    store: dict[int, TensorDict]
    records: list[RoundRecord]
    rng: torch.Tensor
    sample_seed: int | None = None  # the run's sampling seed (a secret in DP runs; sampling.py)
    store_index: dict[str, Any] | None = None  # the disk client store's versions (clientstore)


serial.allow(Checkpoint)


def path_of(directory: Path, rnd: int) -> Path:
    return directory / f"round-{rnd:05d}.ckpt"


def encode(ckpt: Checkpoint) -> bytes:
    """Return the file content of ``ckpt``: magic, checksum line, payload."""
    payload = serial.dumps(ckpt)
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def decode(data: bytes, name: str) -> Checkpoint:
    """Return the checkpoint in ``data``.

    Raises:
        UnsafeCheckpointError: if ``data`` is a pickle (the old format or any other).
        CheckpointError: if the magic line, the checksum or the payload is wrong.

    """
    head = len(MAGIC) + DIGEST_HEX + 1
    if data.startswith(PICKLE_MAGIC) or data[:1] == b"\x80" or data[:2] == b"PK":
        raise UnsafeCheckpointError(
            f"{name} is a pickle (an old ilora checkpoint or a crafted file) and is refused "
            "because loading it could run code; delete it and resume from another checkpoint "
            "or start the run again"
        )
    if not data.startswith(MAGIC) or len(data) < head:
        raise CheckpointError(f"{name} is not an ilora checkpoint (bad header or truncated)")
    digest, payload = data[len(MAGIC) : head - 1].decode(errors="replace"), data[head:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{name} is corrupted (checksum mismatch: truncated or altered)")
    try:
        ckpt = serial.loads(payload)
    except serial.SerialError as err:
        raise CheckpointError(f"{name} has an invalid payload ({err})") from None
    if not isinstance(ckpt, Checkpoint):
        raise CheckpointError(f"{name} does not hold a Checkpoint")
    return ckpt


def save(directory: Path, ckpt: Checkpoint, keep: int = 2) -> Path:
    """Write ``ckpt`` atomically into ``directory``, keep the newest ``keep`` files, return it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = path_of(directory, ckpt.round)
    write_bytes_atomic(path, encode(ckpt))
    for old in sorted(directory.glob("round-*.ckpt"))[:-keep]:
        old.unlink()
    return path


def load_latest(directory: Path) -> tuple[Checkpoint | None, list[str]]:
    """Return the newest valid checkpoint in ``directory`` (None if there is none).

    The second item has one message per checkpoint that was skipped because it is corrupted.

    Raises:
        UnsafeCheckpointError: for a pickle, which is refused, not skipped.

    """
    skipped: list[str] = []
    for path in sorted(directory.glob("round-*.ckpt"), reverse=True):
        try:
            return decode(path.read_bytes(), path.name), skipped
        except UnsafeCheckpointError:
            raise
        except CheckpointError as err:
            skipped.append(f"checkpoint {err}: skipped, using the previous one")
    return None, skipped
