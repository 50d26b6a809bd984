"""Per-round records and the run history (one JSON object per round in ``history.jsonl``)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RoundRecord:
    """What one round did (see DESIGN.md §2 and §8)."""

    round: int
    algorithm: str
    bytes_up: int
    bytes_down: int
    wall_s: float
    clients: dict[str, int]
    metrics: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # lost or rejected updates
    # under injected faults: kind -> [injected, failed, rejected, accepted] (engine.faults)
    faults: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("metrics"))
        if not d["faults"]:
            del d["faults"]  # a run without injected faults writes what it always wrote
        return d


@dataclass
class History:
    """The records of a run, in round order, plus the final evaluation."""

    algorithm: str
    task: str
    records: list[RoundRecord] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)

    def close_round(
        self,
        round_: int,
        started: float,
        traffic: tuple[int, int],
        sampled: int,
        succeeded: int,
        metrics: dict[str, float],
        events: list[dict[str, Any]],
        faults: dict[str, list[int]] | None = None,
    ) -> RoundRecord:
        """Count the round's clients, append its record and return it (both runtimes call this).

        Args:
            round_: the round number (1-based).
            started: ``time.perf_counter()`` at the round's start; ``wall_s`` is measured from it.
            traffic: ``(bytes_up, bytes_down)`` of the round.
            sampled: how many clients were asked to train.
            succeeded: how many accepted updates were aggregated.
            metrics: the round's metrics (kept as given, not copied).
            events: the lost or rejected updates, each with ``outcome`` ``failed``/``rejected``.
            faults: under injected faults, the round's counts per fault kind.

        """
        counts = {
            "sampled": sampled,
            "succeeded": succeeded,
            "failed": sum(e["outcome"] == "failed" for e in events),
            "rejected": sum(e["outcome"] == "rejected" for e in events),
        }
        wall = time.perf_counter() - started
        up, down = traffic
        record = RoundRecord(
            round_, self.algorithm, up, down, wall, counts, metrics, events, faults or {}
        )
        self.records.append(record)
        return record

    def accuracies(self) -> list[float]:
        return [r.metrics["accuracy"] for r in self.records if "accuracy" in r.metrics]

    def _last(self, key: str) -> float:
        values = [r.metrics[key] for r in self.records if key in r.metrics]
        return values[-1] if values else float("nan")

    def summary(self) -> dict[str, Any]:
        """Return ``summary.json``'s content (with ``epsilon``, the final ε, under DP noise)."""
        accs = self.accuracies()
        final_acc = self.final.get("accuracy", accs[-1] if accs else float("nan"))
        privacy = {"epsilon": self._last("epsilon")} if self._has("epsilon") else {}
        return {
            "algorithm": self.algorithm,
            "task": self.task,
            "rounds": len(self.records),
            "final_accuracy": final_acc,
            "final_loss": self.final.get("loss", float("nan")),
            "best_accuracy": max(accs) if accs else float("nan"),
            "total_bytes_up": sum(r.bytes_up for r in self.records),
            "total_bytes_down": sum(r.bytes_down for r in self.records),
            "wall_s": sum(r.wall_s for r in self.records),
            "final_personal_accuracy": self._last("personal_accuracy"),
            "failed_updates": sum(r.clients.get("failed", 0) for r in self.records),
            "rejected_updates": sum(r.clients.get("rejected", 0) for r in self.records),
            "mean_agg_error": self._mean("agg_error"),
            "mean_download_error": self._mean("download_error"),
            **privacy,
        }

    def _mean(self, key: str) -> float:
        return _mean([r.metrics[key] for r in self.records if key in r.metrics])

    def _has(self, key: str) -> bool:
        return any(key in r.metrics for r in self.records)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def finite_or_null(obj: Any) -> Any:
    """Return ``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    return obj


def strict_json(obj: Any, indent: int | None = None) -> str:
    """Return standard JSON (non-finite floats written as ``null``), keys sorted."""
    return json.dumps(finite_or_null(obj), indent=indent, sort_keys=True, allow_nan=False)


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """Append one JSON line (strict JSON) and fsync, so a crash never loses a finished round."""
    with path.open("a") as f:
        f.write(strict_json(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write strict JSON to ``path`` atomically (:func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, strict_json(obj, indent=2).encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temporary file, fsync, rename, fsync of the directory.

    A crash leaves the old file or the new one, never half of one.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
