"""``ilora bench dp``: final accuracy against ε for several noise multipliers.

Every run uses uniform aggregation weights (DP needs them; the no-DP row too, so that the rows
differ only in the privacy mechanism). The clip norm C is one value for all algorithms: by
default (``--clip auto``) the median of the update norms ``‖u − sent‖`` measured in a short run
of each algorithm without DP (``--calib-rounds`` rounds; cached in ``--runs``). Noise
multiplier 0 is the run without DP (no clipping, no noise). The noise is ``dp.noise: upload``
(every upload carries ``N(0, (σC)²)`` per entry, the analysis that covers every algorithm);
``--central`` adds, for the algorithms it names, the runs with ``dp.noise: aggregate`` (central
DP-FedAvg: ``σC/√m`` per upload, so the sum of the ``m`` uploads carries ``σC``; it needs a mean
aggregation and one rank, and gives the same ε for a noise ``√m`` times smaller). ε at
``--delta`` comes from the run's history (``ilora.engine.privacy``), with the Poisson
add/remove approximation beside it for comparison with the DP-FedAvg literature.

Writes ``dp.csv`` (one row per run), ``rounds.csv`` (accuracy and ε per round), ``norms.csv``
(the calibration norms) and ``meta.json`` to ``--out``; the runs go to ``--runs``.

Run: ``ilora bench dp --config configs/bench-dp.yaml --algorithms ilora,ffa-lora --sigmas
0,0.5,1,2,4 --central ffa-lora``; ``--quick``: the smoke config, 3 rounds (about a minute),
into ``runs/quick/dp``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ilora import config
from ilora.bench.campaign import Campaign
from ilora.bench.campaign import outcomes
from ilora.bench.jobs import Job
from ilora.bench.runner import Record

CALIBRATION = ["fed.weighting=uniform", "eval.final_full=false", "eval.every=10"]
WEIGHTING = "uniform"  # fed.weighting of every run (DP needs uniform weights)
CLIP_RULE = "median calibration norm"  # how --clip auto picks C
SAMPLING = "fixed-size without replacement; epsilon: replace-one RDP (dp_accounting)"


@dataclass(frozen=True)
class Plan:
    """The campaign (see the module docstring); ``clip`` is a number or ``auto``."""

    campaign: Campaign
    algorithms: tuple[str, ...] = ("ilora", "ffa-lora")
    sigmas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    central: tuple[str, ...] = ()
    clip: str = "auto"
    calib_rounds: int = 3
    delta: float = 1e-5


def calibration_norms(path: Path, name: str, rounds: int, runs: Path) -> list[list[float]]:
    """Return ``[round, cid, norm]`` of a short run of ``name`` without DP (cached)."""
    from ilora.bench.recorder import update_norms

    cfg = config.load(path, [f"algorithm={name}", f"fed.rounds={rounds}", *CALIBRATION])
    cache = runs / f"calib-{name}.json"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["config"] == config.to_dict(cfg):
            return [list(x) for x in stored["norms"]]
    print(f"calibrating {name}: {rounds} rounds without DP", flush=True)
    norms = [[r, c, n] for r, c, n in update_norms(cfg)]
    runs.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"config": config.to_dict(cfg), "norms": norms}))
    return norms


def majority_share(cfg: config.ExperimentConfig) -> float:
    """Return the share of the most frequent class in the test split (always guessing it)."""
    from ilora.engine.setup import load_data
    from ilora.engine.setup import validate

    _, task = validate(cfg)
    labels = load_data(task).test.labels  # type: ignore[arg-type]
    return float(labels.bincount().max()) / len(labels)


def series(
    names: tuple[str, ...], central: tuple[str, ...], sigmas: tuple[float, ...]
) -> list[tuple[str, str, float]]:
    """Return the runs ``(algorithm, dp.noise, σ)``.

    Every σ with upload noise, and with central (``aggregate``) noise for the algorithms in
    ``central`` (σ = 0 runs once: no noise at all).
    """
    out = [(n, "upload", s) for n in names for s in sigmas]
    out += [(n, "aggregate", s) for n in names if n in central for s in sigmas if s > 0]
    return out


def short_reason(reason: str) -> str:
    """Return the engine's stop message without its per-client list, with the distinct reasons.

    ``"round 20: 0 of 50 sampled clients delivered ... (client 6 rejected: non-finite values in
    X; ...)"`` becomes ``"round 20: 0 of 50 sampled clients delivered ... (non-finite values)"``.
    """
    if not reason:
        return ""
    head, _, rest = reason.partition(" (client ")
    kinds = sorted(set(re.findall(r"(?:rejected|failed): ([^;]*?)(?: in [^;]*)?(?:;|\)|$)", rest)))
    return f"{head} ({'; '.join(kinds)})" if kinds else head


def _dp_row(
    cfg: config.ExperimentConfig, noise: str, summary: Record, records: list[Record]
) -> Record:
    """Return the ``dp.csv`` row of one run."""
    from ilora.engine.privacy import epsilon
    from ilora.engine.privacy import noise_std
    from ilora.engine.sampling import num_sampled

    sigma, delta = cfg.dp.noise_multiplier, cfg.dp.delta
    n, m = cfg.data.num_clients, num_sampled(cfg.data.num_clients, cfg.fed.fraction)
    rounds = summary["rounds"]
    accepted = max(1, sum(r["clients"]["succeeded"] for r in records))
    return {
        "algorithm": cfg.algorithm,
        "noise": noise if sigma > 0 else "",
        "noise_multiplier": sigma,
        "clip_norm": cfg.dp.clip_norm if sigma > 0 else "",
        "noise_std_per_entry": noise_std(cfg.dp, m) if sigma > 0 else 0.0,
        "floats_per_upload": summary["total_bytes_up"] / 4 / accepted,
        "delta": delta,
        "epsilon": summary.get("epsilon", math.inf),
        "epsilon_poisson": epsilon(sigma, n, m, rounds, delta, "poisson"),
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": summary["best_accuracy"],
        "final_personal_accuracy": summary["final_personal_accuracy"],
        "rounds": rounds,
        "stopped": short_reason(summary.get("stopped", "")),
        "num_clients": n,
        "sampled": m,
        "wall_s": round(summary["wall_s"], 1),
    }


def _round_rows(name: str, noise: str, sigma: float, records: list[Record]) -> list[Record]:
    """Return the ``rounds.csv`` rows of one run: accuracy and ε per round."""
    return [
        {
            "algorithm": name,
            "noise": noise if sigma > 0 else "",
            "noise_multiplier": sigma,
            "round": r["round"],
            "accuracy": r.get("accuracy", ""),
            "epsilon": r.get("epsilon", math.inf),
        }
        for r in records
    ]


def clip_norm(plan: Plan, path: Path, runs: Path) -> tuple[float, list[Record]]:
    """Return the clip norm C and the calibration rows (``norms.csv``) it was picked from."""
    rounds = 2 if plan.campaign.quick else plan.calib_rounds
    norm_rows: list[Record] = [
        {"algorithm": n, "round": int(r), "cid": int(c), "norm": v}
        for n in plan.algorithms
        for r, c, v in calibration_norms(path, n, rounds, runs)
    ]
    if plan.clip == "auto":
        return statistics.median(row["norm"] for row in norm_rows), norm_rows
    return float(plan.clip), norm_rows


def _common(plan: Plan) -> list[str]:
    """Return the overrides every run shares (uniform weights; ``--quick``: 3 rounds)."""
    quick = ["fed.rounds=3"] if plan.campaign.quick else []
    return [f"fed.weighting={WEIGHTING}", *quick, *plan.campaign.sets]


def _jobs(plan: Plan, path: Path, runs: Path, clip: float) -> list[tuple[str, float, Job]]:
    """Return ``(dp.noise, σ, job)`` of every run of ``plan`` at clip norm ``clip``."""
    out = []
    for name, noise, sigma in series(plan.algorithms, plan.central, plan.sigmas):
        dp = [] if sigma == 0 else [f"dp.clip_norm={clip}", f"dp.noise_multiplier={sigma}"]
        dp += [f"dp.delta={plan.delta}", f"dp.noise={noise}"]
        label = "" if noise == "upload" else f"-{noise}"
        where = runs / f"{name}{label}-sigma{sigma:g}"
        overrides = (f"algorithm={name}", *_common(plan), *dp)
        out.append((noise, sigma, Job(f"dp {where.name}", path, overrides, where)))
    return out


def run(plan: Plan) -> list[Path]:
    """Run (or reuse) every run of ``plan``, write the result files; return their paths."""
    from ilora.bench.resultfiles import write_results

    path, out, runs = plan.campaign.locations("dp")
    quick = plan.campaign.quick
    clip, norm_rows = clip_norm(plan, path, runs)
    jobs = _jobs(plan, path, runs, clip)
    done = outcomes([job for _, _, job in jobs], plan.campaign.workers)
    rows: list[Record] = []
    round_rows: list[Record] = []
    for (noise, sigma, job), (summary, records) in zip(jobs, done, strict=True):
        cfg = job.config()
        rows.append(_dp_row(cfg, noise, summary, records))
        round_rows += _round_rows(cfg.algorithm, noise, sigma, records)
    for row in rows:
        print(row)
    names = write_results(
        out,
        {"dp.csv": rows, "rounds.csv": round_rows, "norms.csv": norm_rows},
        quick,
        config=str(path),
        clip_norm=clip,
        clip_rule=CLIP_RULE if plan.clip == "auto" else "given",
        calib_rounds=2 if quick else plan.calib_rounds,
        central=",".join(plan.central),
        weighting=WEIGHTING,
        majority_class_accuracy=majority_share(config.load(path, _common(plan))),
        sampling=SAMPLING,
    )
    return [out / name for name in names]
