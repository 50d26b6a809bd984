"""``ilora bench lr``: the quality grid's one learning rate, and what others give.

The quality grid runs every method at the preset's learning rate (one value for all, chosen for
the centralized line, not for any method). This campaign runs the same setting (the preset's
own ranks and Dirichlet alpha) at several LoRA learning rates ``train.lr`` per algorithm and
seed; the head's rate ``train.head_lr`` stays at the preset's value. It answers "is a method's
grid result its ceiling, or the price of a shared learning rate?".

Writes ``lr.csv`` (one row per run: algorithm, lr, seed, final and best accuracy, wall seconds),
``rounds.csv`` (accuracy and train loss per round) and ``meta.json`` to ``--out``; the runs go
to ``--runs`` (a finished run of the same config is reused, so an interrupted sweep resumes).

Run: ``OMP_NUM_THREADS=1 ilora bench lr --config configs/bench-quality/fashion-mnist.yaml
--algorithms ilora,ilora-s,fedit,frlora --lrs 5e-3,2e-3,5e-4,2e-4,1e-4,5e-5 --seeds 0,1,2``
(the defaults); ``--quick``: the smoke config, 2 rounds, seed 0 (seconds), into
``runs/quick/lr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ilora import config
from ilora.bench.campaign import Campaign
from ilora.bench.campaign import outcomes
from ilora.bench.jobs import Job
from ilora.bench.resultfiles import blank_missing
from ilora.bench.resultfiles import thread_launcher
from ilora.bench.resultfiles import write_results
from ilora.bench.runner import Record

PRESET = Path("configs/bench-quality/fashion-mnist.yaml")
Key = tuple[str, float, int]  # algorithm, train.lr, seed


@dataclass(frozen=True)
class Plan:
    """The sweep (see the module docstring)."""

    campaign: Campaign
    algorithms: tuple[str, ...] = ("ilora", "ilora-s", "fedit", "frlora")
    lrs: tuple[float, ...] = (5e-3, 2e-3, 5e-4, 2e-4, 1e-4, 5e-5)
    seeds: tuple[int, ...] = (0, 1, 2)


def _run_row(name: str, lr: float, seed: int, summary: Record) -> Record:
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


def _round_rows(name: str, lr: float, seed: int, records: list[Record]) -> list[Record]:
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


def _jobs(plan: Plan, path: Path, runs: Path, common: list[str]) -> list[tuple[Key, Job]]:
    """Return ``((algorithm, lr, seed), job)`` of every run of ``plan``."""
    seeds = (0,) if plan.campaign.quick else plan.seeds
    keys = [(name, lr, seed) for name in plan.algorithms for lr in plan.lrs for seed in seeds]
    out = []
    for name, lr, seed in keys:
        where = runs / f"{name}-lr{lr:g}-seed{seed}"
        overrides = (f"algorithm={name}", f"train.lr={lr}", f"seed={seed}", *common)
        out.append(((name, lr, seed), Job(f"lr {where.name}", path, overrides, where)))
    return out


def run(plan: Plan) -> list[Path]:
    """Run (or reuse) every run of ``plan``, write the result files; return their paths."""
    path, out, runs = plan.campaign.locations("lr")
    quick = plan.campaign.quick
    common = [*(["fed.rounds=2"] if quick else []), *plan.campaign.sets]
    jobs = _jobs(plan, path, runs, common)
    done = outcomes([job for _, job in jobs], plan.campaign.workers)
    rows: list[Record] = []
    round_rows: list[Record] = []
    for (key, _), (summary, records) in zip(jobs, done, strict=True):
        rows.append(_run_row(*key, summary))
        round_rows += _round_rows(*key, records)
    base = config.to_dict(config.load(path, common))
    names = write_results(
        out,
        {"lr.csv": rows, "rounds.csv": round_rows},
        quick,
        launcher=thread_launcher(),
        config=str(path),
        preset_lr=base["train"]["lr"],
        head_lr=base["train"]["head_lr"],
        setting={key: base[key] for key in ("task", "lora", "data", "fed")},
    )
    return [out / name for name in names]
