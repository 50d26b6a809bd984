"""The one way a measurement runs a config into a run directory, and reads the run back.

Every ``ilora bench`` command that makes runs (the campaigns ``dp``, ``faults``, ``lr``, the
comparison protocol, the quality grid) runs them through :func:`run_to_dir`, as
:mod:`ilora.bench.jobs` jobs; ``ilora compare`` shares :func:`finished`.

- A directory holding a finished run of exactly the config is reused (:func:`finished`).
- A run the engine stops (:class:`~ilora.engine.simulation.RoundFailedError`: too few accepted
  updates in a round, e.g. every client diverged to non-finite values, or a divergence under
  ``fed.stop_on_divergence``) is a result, not an error: its reason goes to ``stopped.json``
  (``{"reason": ...}``) beside ``config.yaml`` and the history of the rounds it completed, and
  :func:`read_outcome` summarises it (:func:`stopped_summary`). Any other exception is a bug,
  not a result: it propagates.
- ``record_norms`` also writes ``update_norms.csv`` (:class:`~ilora.bench.recorder.NormRecorder`).

No per-round checkpoints are written: a measurement resumes at run granularity (an interrupted
run leaves neither ``summary.json`` nor ``stopped.json`` and starts again).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.config import ConfigError

SUMMARY = "summary.json"
STOPPED = "stopped.json"  # beside a run the engine stopped: {"reason": the engine's message}
NORMS = "update_norms.csv"  # with record_norms: round, cid, norm of every upload produced
Record = dict[str, Any]


def finished(
    cfg: config_mod.ExperimentConfig, out: Path, markers: tuple[str, ...] = (SUMMARY,)
) -> bool:
    """Return True if ``out`` holds a finished run of exactly ``cfg``.

    A run is finished when one of the ``markers`` files exists (``summary.json``; measurements
    also count the ``stopped.json`` of a run the engine stopped, :func:`decided`). The stored
    ``config.yaml`` is loaded like any config (options added since it was written take their
    defaults), so a run stays reusable when the schema grows.
    """
    ended = any((out / name).is_file() for name in markers)
    if not ended or not (out / "config.yaml").is_file():
        return False
    try:
        done = config_mod.load(out / "config.yaml")
    except ConfigError:
        return False
    return config_mod.to_dict(done) == config_mod.to_dict(cfg)


def decided(cfg: config_mod.ExperimentConfig, out: Path) -> bool:
    """Return True if ``out`` holds a run of exactly ``cfg`` that finished or was stopped."""
    return finished(cfg, out, (SUMMARY, STOPPED))


def run_to_dir(cfg: config_mod.ExperimentConfig, out: Path, record_norms: bool = False) -> Record:
    """Run ``cfg`` on the embedded engine into ``out``; return its summary (:func:`read_outcome`).

    ``record_norms`` also writes ``out/update_norms.csv``: the norm ``‖u − sent‖`` of every
    upload a client produced (before DP, fault corruption and the server's clipping).
    """
    from ilora.bench.recorder import NormRecorder
    from ilora.engine.history import write_json_atomic
    from ilora.engine.outputs import RunWriter
    from ilora.engine.setup import build
    from ilora.engine.simulation import RoundFailedError
    from ilora.engine.simulation import run

    experiment = build(cfg)
    recorder = NormRecorder(experiment.algorithm) if record_norms else None
    if recorder is not None:
        experiment.algorithm = recorder  # type: ignore[assignment]
    (out / STOPPED).unlink(missing_ok=True)  # a run made again is judged anew
    with RunWriter(out, cfg) as writer:
        try:
            result = run(cfg, on_round=writer.on_round, exp=experiment)
        except RoundFailedError as err:
            write_json_atomic(out / STOPPED, {"reason": str(err)})
            writer.abort()
        else:
            writer.finish(result)
    if recorder is not None:
        _write_norms(out / NORMS, recorder.produced)
    return read_outcome(out)[0]


def _write_norms(path: Path, produced: list[tuple[int, int, float]]) -> None:
    from ilora.bench import resultfiles

    rows = [{"round": r, "cid": c, "norm": n} for r, c, n in produced]
    if rows:  # a run stopped before any client uploaded has none
        resultfiles.write_rows(path, rows)


def stopped_reason(out: Path) -> str:
    """Return the engine's reason for stopping the run in ``out`` ("" when it was not stopped)."""
    path = out / STOPPED
    return str(json.loads(path.read_text())["reason"]) if path.is_file() else ""


def read_history(out: Path) -> list[Record]:
    """Return the ``history.jsonl`` records in ``out`` (the completed rounds; none: empty)."""
    path = out / "history.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


def read_outcome(out: Path) -> tuple[Record, list[Record]]:
    """Return ``(summary, history records)`` of the finished or stopped run in ``out``.

    A finished run's summary is its ``summary.json``; a stopped run's is built from its history
    (:func:`stopped_summary`).
    """
    records = read_history(out)
    if (out / SUMMARY).is_file():
        return json.loads((out / SUMMARY).read_text()), records
    return stopped_summary(records, stopped_reason(out)), records


def stopped_summary(records: list[Record], reason: str) -> Record:
    """Return the ``summary.json`` fields of a run the engine stopped, from its history.

    ``stopped`` holds the engine's reason; the round that failed is not in ``records``, so
    ``rounds`` counts the completed ones. The final accuracies were never measured (NaN); best
    accuracy is over the per-round evaluations before the stop.
    """
    accuracies = [r["accuracy"] for r in records if r.get("accuracy") is not None]
    return {
        "stopped": reason,
        "rounds": len(records),
        "final_accuracy": math.nan,
        "final_personal_accuracy": math.nan,
        "best_accuracy": max(accuracies, default=math.nan),
        "total_bytes_up": sum(r["bytes_up"] for r in records),
        "total_bytes_down": sum(r["bytes_down"] for r in records),
        "failed_updates": sum(r["clients"]["failed"] for r in records),
        "rejected_updates": sum(r["clients"]["rejected"] for r in records),
        "wall_s": sum(r["wall_s"] for r in records),
        "epsilon": records[-1].get("epsilon", math.inf) if records else math.inf,
    }
