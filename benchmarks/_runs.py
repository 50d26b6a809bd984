"""Helpers the fault and DP benchmarks share: run directories and update norms.

``run_in`` reuses a run directory that already holds a finished run of exactly the same
config (as ``ilora compare`` does), so an interrupted campaign resumes where it stopped. A run
the engine stops (:class:`RoundFailedError`: too few accepted updates in a round, e.g. every
client diverged to non-finite values) is a result too: its reason goes to ``stopped.json`` and
its summary says where it stopped (:func:`stopped_summary`), instead of ending the campaign.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ilora import config
from ilora.bench import resultfiles
from ilora.engine.outputs import RunWriter
from ilora.engine.setup import build
from ilora.engine.simulation import RoundFailedError, run
from ilora.engine.validation import update_norm
from ilora.tensors import canonical
from ilora.types import ClientContext, ClientInfo, Payload, RoundInfo, TensorDict, Upload

STOPPED = "stopped.json"
SMOKE = Path("configs/smoke.yaml")


def add_campaign_args(ap: argparse.ArgumentParser, quick_help: str) -> None:
    """Add the options every campaign shares: ``--set``, ``--quick``, ``--out``, ``--runs``."""
    ap.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--out", type=Path, default=None, help="results directory")
    ap.add_argument("--runs", type=Path, default=None, help="run directories")


def locations(a: argparse.Namespace, name: str) -> tuple[Path, Path, Path]:
    """Return ``(config, results directory, runs directory)`` of campaign ``name``.

    ``--quick`` uses the smoke config and writes under ``runs/quick/``; otherwise ``--config``,
    ``results/<name>`` and ``runs/<name>``, unless ``--out``/``--runs`` say otherwise.
    """
    path = SMOKE if a.quick else a.config
    out = a.out or Path(f"runs/quick/{name}" if a.quick else f"results/{name}")
    runs = a.runs or Path(f"runs/quick/{name}-runs" if a.quick else f"runs/{name}")
    return path, out, runs


def _finished(cfg: config.ExperimentConfig, run_dir: Path) -> bool:
    done = (run_dir / "summary.json").is_file() or (run_dir / STOPPED).is_file()
    if not done or not (run_dir / "config.yaml").is_file():
        return False
    try:
        done = config.load(run_dir / "config.yaml")
    except config.ConfigError:
        return False
    return config.to_dict(done) == config.to_dict(cfg)


def run_in(
    cfg: config.ExperimentConfig, run_dir: Path, record_norms: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return ``(summary, history records)`` of ``cfg`` run in ``run_dir`` (reused if finished).

    ``record_norms`` also writes ``run_dir/update_norms.csv``: the norm ``‖u − sent‖`` of every
    upload a client produced (before DP, fault corruption and the server's clipping).
    """
    if _finished(cfg, run_dir):
        print(f"{run_dir}: finished run found, reused", flush=True)
    else:
        print(f"{run_dir}: running {cfg.algorithm}, {cfg.fed.rounds} rounds", flush=True)
        (run_dir / STOPPED).unlink(missing_ok=True)
        writer = RunWriter(run_dir, cfg)
        exp = build(cfg)
        recorder = _Recorder(exp.algorithm)
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
    history = run_dir / "history.jsonl"
    lines = history.read_text().splitlines() if history.is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    if (run_dir / STOPPED).is_file():
        reason = json.loads((run_dir / STOPPED).read_text())["reason"]
        return stopped_summary(records, reason), records
    return json.loads((run_dir / "summary.json").read_text()), records


def stopped_summary(records: list[dict[str, Any]], reason: str) -> dict[str, Any]:
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


class _Recorder:
    """Wraps an algorithm and records update norms; the run itself is unchanged.

    ``produced``: ``(round, cid, ‖u − sent‖)`` of every upload a client's ``upload`` hook
    returns; ``norms``: the same for every upload that reaches ``aggregate`` (accepted).
    """

    def __init__(self, alg: Any) -> None:
        self._alg = alg
        self.sent: dict[int, TensorDict] = {}
        self.norms: list[tuple[int, int, float]] = []
        self.produced: list[tuple[int, int, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._alg, name)

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        up, new_state = self._alg.upload(trained, ctx, cstate)
        sent = canonical(ctx.payload.tensors, torch.float32)
        norm = update_norm(canonical(up.tensors, torch.float32), sent)
        self.produced.append((ctx.rnd.round, ctx.client.cid, norm))
        return up, new_state

    def download(self, state: Any, client: ClientInfo, rnd: RoundInfo) -> Payload:
        payload = self._alg.download(state, client, rnd)
        self.sent[client.cid] = payload.tensors
        return payload

    def aggregate(self, state: Any, uploads: Mapping[int, Upload], rnd: RoundInfo) -> Any:
        for cid in sorted(uploads):
            norm = update_norm(uploads[cid].tensors, self.sent[cid])
            self.norms.append((rnd.round, cid, norm))
        return self._alg.aggregate(state, uploads, rnd)


def update_norms(cfg: config.ExperimentConfig) -> list[tuple[int, int, float]]:
    """Return ``(round, cid, ‖u − sent‖)`` of every accepted upload of a run of ``cfg``."""
    exp = build(cfg)
    recorder = _Recorder(exp.algorithm)
    exp.algorithm = recorder  # type: ignore[assignment]
    run(cfg, exp=exp)
    return recorder.norms
