"""Learning-rate sensitivity: the quality grid's one learning rate, and what others give.

The quality grid runs every method at the preset's learning rate (one value for all, chosen for
the centralized line, not for any method). This script runs the same setting (the preset's own
ranks and Dirichlet alpha) at several LoRA learning rates ``train.lr`` per algorithm and seed;
the head's rate ``train.head_lr`` stays at the preset's value. It answers "is a method's grid
result its ceiling, or the price of a shared learning rate?".

Writes ``lr.csv`` (one row per run: algorithm, lr, seed, final and best accuracy, wall seconds),
``rounds.csv`` (accuracy and train loss per round) and ``meta.json`` to ``--out``; the runs go
to ``--runs`` (a finished run of the same config is reused, so an interrupted sweep resumes).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lr_sensitivity.py --config
configs/bench-quality/fashion-mnist.yaml --algorithms ilora,ilora-s,fedit,frlora --lrs
5e-3,2e-3,5e-4,2e-4,1e-4,5e-5 --seeds 0,1,2`` (the defaults); ``--quick``: the smoke config, 2
rounds, seed 0 (seconds), into ``runs/quick/lr``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _runs import add_campaign_args, locations, run_in

from ilora import config
from ilora.bench.resultfiles import blank_missing, write_results


def _run_row(name: str, lr: float, seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "algorithm": name,
        "lr": lr,
        "seed": seed,
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": summary["best_accuracy"],
        "final_loss": blank_missing(summary.get("final_loss")),
        "rounds": summary["rounds"],
        "wall_s": round(float(summary["wall_s"]), 1),
    }


def _round_rows(name: str, lr: float, seed: int, records: list[dict[str, Any]]) -> list[dict]:
    return [
        {
            "algorithm": name,
            "lr": lr,
            "seed": seed,
            "round": r["round"],
            "accuracy": blank_missing(r.get("accuracy")),
            "train_loss": blank_missing(r.get("train_loss")),
        }
        for r in records
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/bench-quality/fashion-mnist.yaml"))
    ap.add_argument("--algorithms", default="ilora,ilora-s,fedit,frlora", help="comma-separated")
    ap.add_argument(
        "--lrs", default="5e-3,2e-3,5e-4,2e-4,1e-4,5e-5", help="comma-separated train.lr values"
    )
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    add_campaign_args(ap, "smoke config, 2 rounds, seed 0")
    a = ap.parse_args()
    path, out, runs = locations(a, "lr")
    seeds = [0] if a.quick else [int(s) for s in a.seeds.split(",")]
    lrs = [float(x) for x in a.lrs.split(",")]
    common = [*(["fed.rounds=2"] if a.quick else []), *a.set]
    rows: list[dict[str, Any]] = []
    round_rows: list[dict[str, Any]] = []
    for name in a.algorithms.split(","):
        for lr in lrs:
            for seed in seeds:
                run = [f"algorithm={name}", f"train.lr={lr}", f"seed={seed}", *common]
                cfg = config.load(path, run)
                summary, records = run_in(cfg, runs / f"{name}-lr{lr:g}-seed{seed}")
                rows.append(_run_row(name, lr, seed, summary))
                round_rows += _round_rows(name, lr, seed, records)
    base = config.to_dict(config.load(path, common))
    written = write_results(
        out,
        {"lr.csv": rows, "rounds.csv": round_rows},
        a.quick,
        launcher="OMP_NUM_THREADS=1 .venv/bin/python",
        config=str(path),
        preset_lr=base["train"]["lr"],
        head_lr=base["train"]["head_lr"],
        setting={
            "task": base["task"],
            "lora": base["lora"],
            "data": base["data"],
            "fed": base["fed"],
        },
    )
    print(f"written: {out}/{', '.join(written)}")


if __name__ == "__main__":
    main()
