"""Where clients' state lives between rounds: in memory, or on disk for 100,000+ clients.

A stateful method keeps a ``TensorDict`` per client between the rounds it is sampled in
(ILoRA-S: the control variate ``c_k`` of every LoRA factor and the head). The engine reads a
client's state when it is sampled and writes the new one after its turn; ``store[cid]`` is
``{}`` for a client that has none. Two stores, chosen by ``fed.client_store``:

- :class:`MemoryStore` (``memory``, the default): a dict. Its memory is the sum of every client's
  state, e.g. 100,000 MiniLM clients at rank 8 hold about 5 GB of control variates.
- :class:`DiskStore` (``disk``): one safetensors file per client state, loaded when the client
  is sampled, so the resident memory holds the sampled clients' states only. A client's file
  is written to a temporary name, fsync'd and renamed (and its directory fsync'd), so a crash
  leaves the old or the new state, never half of one. Safetensors keeps names, dtypes and
  shapes bit for bit and loads without pickle.

**Why one file per client, not one memory-mapped store.** Each write is a new, immutable file
named ``<cid // 1000>/<cid>-<gen>.safetensors`` (``gen``: a counter over all writes), so a
write is atomic by a rename and a checkpoint needs no copy of the states: it records the index
``{cid: gen}`` (:meth:`DiskStore.snapshot`, a few bytes per client with state) and the files
it names stay until no kept checkpoint names them. A single memory-mapped array would need
fixed-size slots (ranks differ between clients), a journal for atomic updates and a copy (or
copy-on-write) per checkpoint. Files are sharded 1,000 to a directory.

**Retention.** A file replaced after checkpoint ``k`` (tag ``k + 1``) is still named by the
checkpoints up to ``k``; when checkpoint ``j`` is taken, files tagged ``<= j − keep + 1`` are
deleted (``keep`` = the checkpoints kept, ``engine.checkpoint.save``'s default 2). Without
checkpoints (``keep = 0``) a replaced file is deleted at once. After a resume the run
rewrites the files of the redone rounds under the same names (the run is deterministic).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from safetensors.torch import save_file

from ilora.engine.history import fsync_path
from ilora.types import TensorDict

SNAPSHOT_FORMAT = 1
KEEP = 2  # checkpoints kept by engine.checkpoint.save (its default ``keep``)
SHARD = 1000  # client files per directory


class MemoryStore(MutableMapping[int, TensorDict]):
    """Client states in a dict (``store[cid]`` is ``{}`` for a client without one)."""

    def __init__(self, states: Mapping[int, TensorDict] | None = None) -> None:
        self._states = {cid: s for cid, s in (states or {}).items() if s}

    def __getitem__(self, cid: int) -> TensorDict:
        return self._states.get(cid, {})

    def __setitem__(self, cid: int, state: TensorDict) -> None:
        if state:
            self._states[cid] = state
        else:
            self._states.pop(cid, None)

    def __delitem__(self, cid: int) -> None:
        self._states.pop(cid, None)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._states))

    def __len__(self) -> int:
        return len(self._states)

    def checkpoint(self) -> tuple[dict[int, TensorDict], dict[str, Any] | None]:
        """Return ``(Checkpoint.store, Checkpoint.store_index)``: every state, no index."""
        return dict(self._states), None


class DiskStore(MutableMapping[int, TensorDict]):
    """Client states in one safetensors file each under ``directory`` (module docstring).

    Args:
        directory: where the files go (created); None: a temporary directory removed with
            the store (a run that cannot be resumed).
        keep: checkpoints whose files are kept (0: delete a replaced file at once).
        index: a :meth:`snapshot` to continue from (a resumed run), None to start empty.

    """

    def __init__(
        self, directory: Path | None, keep: int = KEEP, index: Mapping[str, Any] | None = None
    ) -> None:
        self._tmp = None
        if directory is None:  # removed when the store is garbage-collected
            self._tmp = tempfile.TemporaryDirectory(prefix="ilora-clients-")
            directory = Path(self._tmp.name)
        self.directory: Path = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._versions: dict[int, int] = {}
        self._next = 0  # generation of the next file written
        self._taken = 0  # snapshots taken
        self._replaced: list[tuple[int, int, int]] = []  # (tag, cid, gen) awaiting deletion
        if index is not None:
            self._restore(index)

    def path(self, cid: int, gen: int) -> Path:
        return self.directory / f"{cid // SHARD:05d}" / f"{cid}-{gen}.safetensors"

    def __getitem__(self, cid: int) -> TensorDict:
        gen = self._versions.get(cid)
        return {} if gen is None else load_file(self.path(cid, gen))

    def __setitem__(self, cid: int, state: TensorDict) -> None:
        self._put(cid, state, durable=True)

    def _put(self, cid: int, state: TensorDict, durable: bool) -> None:
        if state:
            gen, self._next = self._next, self._next + 1
            _write_atomic(self.path(cid, gen), state, durable)
            self._retire(cid)
            self._versions[cid] = gen
        else:
            self._retire(cid)

    def __delitem__(self, cid: int) -> None:
        self._retire(cid)

    def write_many(self, states: Iterable[tuple[int, TensorDict]]) -> None:
        """Set many clients' states, e.g. to import a memory store: one ``os.sync`` for all.

        Each file is still written under a temporary name and renamed; the data reach the
        disk together at the end instead of one fsync per file (about 20 ms each here).
        """
        for cid, state in states:
            self._put(cid, state, durable=False)
        os.sync()

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._versions))

    def __len__(self) -> int:
        return len(self._versions)

    def _retire(self, cid: int) -> None:
        """Drop ``cid``'s current file from the index; delete it now or once unreferenced."""
        gen = self._versions.pop(cid, None)
        if gen is None:
            return
        if self.keep == 0:
            self.path(cid, gen).unlink(missing_ok=True)
        else:
            self._replaced.append((self._taken + 1, cid, gen))

    def snapshot(self) -> dict[str, Any]:
        """Return the index of the current states (JSON: ints) and delete unreferenced files.

        The files it names stay on disk while this snapshot is among the newest ``keep``.
        """
        self._taken += 1
        limit = self._taken - self.keep + 1
        for _, cid, gen in [r for r in self._replaced if r[0] <= limit]:
            self.path(cid, gen).unlink(missing_ok=True)
        self._replaced = [r for r in self._replaced if r[0] > limit]
        return {
            "format": SNAPSHOT_FORMAT,
            "versions": [[cid, gen] for cid, gen in sorted(self._versions.items())],
            "next": self._next,
            "taken": self._taken,
            "replaced": [list(r) for r in self._replaced],
        }

    def checkpoint(self) -> tuple[dict[int, TensorDict], dict[str, Any] | None]:
        """Return ``(Checkpoint.store, Checkpoint.store_index)``: no states, the index."""
        return {}, self.snapshot()

    def _restore(self, index: Mapping[str, Any]) -> None:
        if index.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"client store index format {index.get('format')!r} is not 1")
        self._versions = {int(c): int(g) for c, g in index["versions"]}
        self._next, self._taken = int(index["next"]), int(index["taken"])
        self._replaced = [(int(t), int(c), int(g)) for t, c, g in index["replaced"]]
        missing = [c for c, g in self._versions.items() if not self.path(c, g).is_file()]
        if missing:
            raise FileNotFoundError(
                f"client store {self.directory}: the checkpoint names {len(missing)} client "
                f"state files that are missing (first: client {missing[0]}); resume from the "
                "run directory the checkpoint was written in"
            )


def _write_atomic(path: Path, state: TensorDict, durable: bool = True) -> None:
    """Write ``state`` to ``path`` as safetensors: temporary file, fsync, rename, fsync dir.

    ``durable=False`` leaves out both fsyncs (the caller syncs a batch of files at once).
    """
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp))
    if durable:
        fsync_path(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


ClientStore = MemoryStore | DiskStore


def open_store(
    kind: str,
    directory: Path | None,
    states: Mapping[int, TensorDict] | None = None,
    index: Mapping[str, Any] | None = None,
    keep: int = KEEP,
) -> ClientStore:
    """Return the ``fed.client_store`` store ``kind``, continued from a checkpoint's fields.

    ``states`` and ``index`` are a checkpoint's ``store`` and ``store_index`` (None for a fresh
    run). The index's own kind wins over ``kind``: a run resumes with the store it was written
    with.

    Raises:
        ValueError: if a disk index is given without its ``directory``.

    """
    if index is not None:
        if directory is None:
            raise ValueError(
                "this checkpoint's client states are on disk; resume it from its run directory "
                "(ilora run --resume DIR)"
            )
        return DiskStore(directory, keep, index)
    if kind == "disk" and not states:
        return DiskStore(directory, keep)
    return MemoryStore(states)
