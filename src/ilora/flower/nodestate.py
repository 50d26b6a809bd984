"""A Flower node's client state on its own disk, round by round, so that a resumed run is bitwise.

A method with ``stateful_clients`` (ILoRA-S's control variates, the personal factors of
FedSA-LoRA, pFedLoRU, FedLEASE, CE-LoRA, HetLoRA's and FRLoRA's caches) keeps a ``TensorDict``
per client between rounds. On Flower that state never leaves the node: the server's checkpoint
cannot hold it (personal factors are private to the client, and a control variate would tell
the server about the client's data). So each node keeps it on its own disk, under its state
directory (node config ``state-dir``, or the ``ClientApp``'s default: ``<run>/node-state`` for
``ilora flower simulate``)::

    <state-dir>/<run key>/client-<cid>/index.json          {"format", "run", "cid", "floor"}
    <state-dir>/<run key>/client-<cid>/round-<NNNNN>.state  the state after round NNNNN

The run key is a random hex string the server draws once per run (kept in the run directory's
``manifest.json``) and sends in the handshake with the round the run resumes after (0: a fresh
run). A ``.state`` file is :func:`ilora.engine.serial.dumps` of ``{"run", "cid", "round",
"state"}`` (JSON and safetensors, never pickle), written atomically after every ``train``
message the client answers (but none while its state is still empty), so the state *as of*
round ``q`` is the newest file of a round ``<= q`` (none: the empty state). A ``train``
message of round ``t`` starts from the state as of ``t - 1``; an ``evaluate`` message of round
``r`` (the clients' views after round ``r``) reads the state as of ``r``.

Retention: after writing round ``t``, the files of rounds ``> t - KEEP_ROUNDS`` are kept with
the newest older one; ``floor`` (the oldest round still answerable) is raised before older
files are deleted. The server keeps its last two checkpoints, and a client trains in round
``t`` only after the server wrote checkpoint ``t - 1``, so every round a resume can start from
stays answerable.

Resuming after round ``R`` (:meth:`NodeState.resume`): the node deletes its files of rounds
``> R`` (work of rounds the server will redo) and refuses, with one line, when it cannot give
the state as of ``R``: no directory for this run and client, or ``floor > R``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ilora.engine import serial
from ilora.engine.history import write_bytes_atomic
from ilora.engine.history import write_json_atomic
from ilora.types import TensorDict

FORMAT = 1
KEEP_ROUNDS = 3  # rounds after which a state file may be replaced by a newer one
RUN_KEY = re.compile(r"[0-9a-f]{32}")  # what the server may name a run by (a directory name)
INDEX = "index.json"


class NodeStateError(RuntimeError):
    """A node cannot give a client's state as of the round asked (one line, with the fix)."""


def check_run_key(key: str) -> str:
    """Return ``key`` if it is a run key (32 lowercase hex digits), else raise ValueError."""
    if not RUN_KEY.fullmatch(key):
        raise ValueError(f"the server named its run {key[:40]!r}, not 32 hex digits; refused")
    return key


class NodeState:
    """One client's state files under ``root/<run>/client-<cid>`` (module docstring)."""

    def __init__(self, root: Path, run: str, cid: int, keep: int = KEEP_ROUNDS) -> None:
        self.run, self.cid, self.keep = check_run_key(run), int(cid), keep
        self.directory = Path(root) / run / f"client-{self.cid}"

    def path(self, rnd: int) -> Path:
        return self.directory / f"round-{rnd:05d}.state"

    def rounds(self) -> list[int]:
        """Return the rounds with a state file, ascending."""
        found = (re.fullmatch(r"round-(\d{5})\.state", p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    # ---- the handshake
    def start(self) -> None:
        """Begin a fresh run: no state file, every round answerable."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self._write_index(floor=0)

    def resume(self, rnd: int) -> None:
        """Continue after round ``rnd``: drop later files; refuse if ``rnd`` is not answerable."""
        if rnd == 0:
            self.start()
            return
        floor = self._floor(rnd)
        if floor > rnd:
            raise NodeStateError(
                f"client {self.cid} keeps its state in {self.directory} only as of round "
                f"{floor} and later, not as of round {rnd}; resume from a newer checkpoint or "
                "start the run again"
            )
        for later in (q for q in self.rounds() if q > rnd):
            self.path(later).unlink()

    def _floor(self, rnd: int) -> int:
        index = self.directory / INDEX
        if not index.is_file():
            raise NodeStateError(
                f"client {self.cid} has no saved state of run {self.run} in {self.directory}, "
                f"so the run cannot resume after round {rnd} bitwise; resume it with the nodes "
                "(and their state-dir) that ran it, or start the run again"
            )
        try:
            meta = json.loads(index.read_text())
            ok = meta["format"] == FORMAT and meta["run"] == self.run and meta["cid"] == self.cid
            floor = int(meta["floor"]) if ok else -1
        except (ValueError, KeyError, TypeError):
            floor = -1
        if floor < 0:
            raise NodeStateError(f"{index} is not this client's state index; start the run again")
        return floor

    def _write_index(self, floor: int) -> None:
        meta = {"format": FORMAT, "run": self.run, "cid": self.cid, "floor": floor}
        write_json_atomic(self.directory / INDEX, meta)

    # ---- the rounds
    def load(self, rnd: int) -> TensorDict:
        """Return the state as of round ``rnd`` (the newest file of a round ``<= rnd``)."""
        older = [q for q in self.rounds() if q <= rnd]
        if not older:
            return {}
        path = self.path(older[-1])
        try:
            data: Any = serial.loads(path.read_bytes())
        except serial.SerialError as err:
            raise NodeStateError(f"{path} is unreadable ({err}); start the run again") from None
        want = {"run": self.run, "cid": self.cid, "round": older[-1]}
        if not isinstance(data, dict) or {k: data.get(k) for k in want} != want:
            raise NodeStateError(f"{path} holds another run's or client's state; refused")
        state = data.get("state")
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise NodeStateError(f"{path} holds no tensor state; refused")
        return state

    def save(self, rnd: int, state: TensorDict) -> None:
        """Write the state after round ``rnd`` and drop the files no resume can need.

        An empty state before any file needs none (ILoRA's clients keep nothing after all).
        """
        if not state and not any(q < rnd for q in self.rounds()):
            return
        data = {"run": self.run, "cid": self.cid, "round": rnd, "state": dict(state)}
        write_bytes_atomic(self.path(rnd), serial.dumps(data))
        cut = rnd - self.keep
        older = [q for q in self.rounds() if q <= cut]
        if len(older) > 1:
            self._write_index(floor=older[-1])  # first the index, then the files
            for q in older[:-1]:
                self.path(q).unlink()
