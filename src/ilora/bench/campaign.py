"""What the run campaigns (``ilora bench dp``, ``faults``, ``lr``) share: run directories, norms.

:func:`run_in` reuses a run directory that already holds a finished run of exactly the same
config (as ``ilora compare`` does), so an interrupted campaign resumes where it stopped. A run
the engine stops (:class:`RoundFailedError`: too few accepted updates in a round, e.g. every
client diverged to non-finite values) is a result too: its reason goes to ``stopped.json`` and
its summary says where it stopped (:func:`stopped_summary`), instead of ending the campaign.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilora import config

STOPPED = "stopped.json"
SMOKE = Path("configs/smoke.yaml")
Record = dict[str, Any]


@dataclass(frozen=True)
class Campaign:
    """The options every campaign shares: where it reads and writes, and extra overrides.

    ``quick`` uses the smoke config and writes under ``runs/quick/``; otherwise ``config``,
    ``results/<name>`` and ``runs/<name>``, unless ``out``/``runs`` say otherwise.
    """

    config: Path
    quick: bool = False
    sets: tuple[str, ...] = ()
    out: Path | None = None
    runs: Path | None = None

    def locations(self, name: str) -> tuple[Path, Path, Path]:
        """Return ``(config, results directory, runs directory)`` of campaign ``name``."""
        path = SMOKE if self.quick else self.config
        out = self.out or Path(f"runs/quick/{name}" if self.quick else f"results/{name}")
        runs = self.runs or Path(f"runs/quick/{name}-runs" if self.quick else f"runs/{name}")
        return path, out, runs


def run_in(
    cfg: config.ExperimentConfig, run_dir: Path, record_norms: bool = False
) -> tuple[Record, list[Record]]:
    """Return ``(summary, history records)`` of ``cfg`` run in ``run_dir`` (reused if finished).

    ``record_norms`` also writes ``run_dir/update_norms.csv``: the norm ``‖u − sent‖`` of every
    upload a client produced (before DP, fault corruption and the server's clipping).
    """
    from ilora.bench.runner import finished

    if finished(cfg, run_dir, ("summary.json", STOPPED)):
        print(f"{run_dir}: finished run found, reused", flush=True)
    else:
        print(f"{run_dir}: running {cfg.algorithm}, {cfg.fed.rounds} rounds", flush=True)
        _run(cfg, run_dir, record_norms)
    history = run_dir / "history.jsonl"
    lines = history.read_text().splitlines() if history.is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    if (run_dir / STOPPED).is_file():
        reason = json.loads((run_dir / STOPPED).read_text())["reason"]
        return stopped_summary(records, reason), records
    return json.loads((run_dir / "summary.json").read_text()), records


def _run(cfg: config.ExperimentConfig, run_dir: Path, record_norms: bool) -> None:
    """Run ``cfg`` into ``run_dir``; a run the engine stops leaves ``stopped.json``."""
    from ilora.bench import resultfiles
    from ilora.bench.recorder import NormRecorder
    from ilora.engine.outputs import RunWriter
    from ilora.engine.setup import build
    from ilora.engine.simulation import RoundFailedError
    from ilora.engine.simulation import run

    (run_dir / STOPPED).unlink(missing_ok=True)
    writer = RunWriter(run_dir, cfg)
    exp = build(cfg)
    recorder = NormRecorder(exp.algorithm)
    if record_norms:
        exp.algorithm = recorder  # type: ignore[assignment]
    with writer:
        try:
            result = run(cfg, on_round=writer.on_round, exp=exp, on_checkpoint=None)
        except RoundFailedError as err:
            print(f"{run_dir}: stopped: {str(err)[:200]}", flush=True)
            (run_dir / STOPPED).write_text(json.dumps({"reason": str(err)}))
            writer.abort()
        else:
            writer.finish(result)
    if record_norms:
        rows = [{"round": r, "cid": c, "norm": n} for r, c, n in recorder.produced]
        resultfiles.write_rows(run_dir / "update_norms.csv", rows)


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
