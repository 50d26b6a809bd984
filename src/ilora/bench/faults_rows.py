"""The rows one fault-campaign run adds to each table of ``ilora bench faults``.

``faults.csv`` (the run's outcome and guards), ``accounting.csv`` (per fault kind: injected
against counted as failed, rejected or accepted), ``rounds.csv`` (accuracy per round) and
``norms.csv`` (the update norms the run recorded); every row starts with the run's key
(algorithm, variant, seed).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ilora import config
from ilora.bench.runner import Record


def accounting(cfg: config.ExperimentConfig, records: list[Record]) -> dict[str, list[int]]:
    """Return ``kind -> [injected, counted failed, counted rejected, accepted]`` for a run.

    Read from what the run recorded (the round step's per-round counts over the clients it
    actually sampled, :func:`ilora.engine.faults.round_counts`), so it stays right when the
    sampling was private. Sampled clients without a fault count under ``honest``.
    """
    table: dict[str, list[int]] = {}
    for rec in records:
        for kind, counts in round_counts(cfg, rec).items():
            row = table.setdefault(kind, [0, 0, 0, 0])
            table[kind] = [a + b for a, b in zip(row, counts, strict=True)]
    return table


def round_counts(cfg: config.ExperimentConfig, rec: Record) -> dict[str, list[int]]:
    """Return one round's counts per fault kind, as recorded (or, for older runs, rebuilt).

    A run without injected faults: every sampled client is ``honest`` (the record's count and
    events). A run recorded before the engine kept these counts is rebuilt from ``cfg.seed``,
    which is its sampling seed unless the sampling was private: that is refused.
    """
    from ilora.engine import faults
    from ilora.engine.sampling import private_sampling
    from ilora.engine.sampling import sample_clients

    if "faults" in rec:
        return dict(rec["faults"])
    if not faults.injects(cfg.faults):
        lost = [sum(e["outcome"] == o for e in rec["events"]) for o in ("failed", "rejected")]
        sampled = rec["clients"]["sampled"]
        return {"honest": [sampled, *lost, sampled - sum(lost)]}
    if private_sampling(cfg):
        raise config.ConfigError(
            f"round {rec['round']} of this {cfg.algorithm} run records no fault counts and its "
            "client sampling was private (DP noise), so its faults cannot be accounted: "
            "run it again with this version"
        )
    sampled = sample_clients(range(cfg.data.num_clients), cfg.fed.fraction, cfg.seed, rec["round"])
    return faults.round_counts(cfg.faults, cfg.seed, rec["round"], sampled, rec["events"])


def norm_rows(run_dir: Path, key: Mapping[str, Any]) -> list[Record]:
    """Return the run's recorded update norms (none for a run made without recording)."""
    path = run_dir / "update_norms.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{**key, **row} for row in csv.DictReader(f)]


def run_row(
    key: Mapping[str, Any], cfg: config.ExperimentConfig, summary: Record, records: list[Record]
) -> Record:
    """Return the ``faults.csv`` row of one run."""
    from ilora.algorithms.base import ALGORITHMS

    return {
        **key,
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": summary["best_accuracy"],
        "rounds": summary["rounds"],
        "sampled": sum(r["clients"]["sampled"] for r in records),
        "accepted": sum(r["clients"]["succeeded"] for r in records),
        "failed": summary["failed_updates"],
        "rejected": summary["rejected_updates"],
        "empty_rounds": sum(r["clients"]["succeeded"] == 0 for r in records),
        "clip_update_norm": cfg.fed.clip_update_norm,
        "max_update_norm": cfg.fed.max_update_norm,
        "robust": cfg.fed.robust,
        "mean_aggregation": ALGORITHMS.get(cfg.algorithm).mean_aggregation,
        "trim_fraction": cfg.fed.trim_fraction if cfg.fed.robust != "none" else "",
        "min_cosine": cfg.fed.min_cosine,
        "wall_s": round(summary["wall_s"], 1),
    }


def accounting_rows(
    key: Mapping[str, Any], cfg: config.ExperimentConfig, records: list[Record]
) -> list[Record]:
    """Return the ``accounting.csv`` rows of one run: one per fault kind injected."""
    names = ("injected", "failed", "rejected", "accepted")
    return [
        {**key, "fault": kind, **dict(zip(names, counts, strict=True))}
        for kind, counts in sorted(accounting(cfg, records).items())
    ]


def rows(
    key: Mapping[str, Any],
    cfg: config.ExperimentConfig,
    summary: Record,
    records: list[Record],
    run_dir: Path,
) -> dict[str, list[Record]]:
    """Return the rows one run adds to each table, by file name."""
    return {
        "faults.csv": [run_row(key, cfg, summary, records)],
        "accounting.csv": accounting_rows(key, cfg, records),
        "rounds.csv": [
            {**key, "round": r["round"], "accuracy": r["accuracy"]}
            for r in records
            if "accuracy" in r
        ],
        "norms.csv": norm_rows(run_dir, key),
    }
