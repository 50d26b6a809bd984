"""Differential privacy: final accuracy against ε for several noise multipliers.

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

Run: ``.venv/bin/python benchmarks/dp.py --config configs/bench-dp.yaml --algorithms
ilora,ffa-lora --sigmas 0,0.5,1,2,4 --central ffa-lora``; ``--quick``: the smoke config, 3
rounds (about a minute), into ``runs/quick/dp``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from _runs import add_campaign_args, locations, run_in, update_norms

from ilora import config
from ilora.bench.resultfiles import write_results
from ilora.engine.privacy import epsilon, noise_std
from ilora.engine.sampling import num_sampled
from ilora.engine.setup import load_data, validate

CALIBRATION = ["fed.weighting=uniform", "eval.final_full=false", "eval.every=10"]


def calibration_norms(path: Path, name: str, rounds: int, runs: Path) -> list[list[float]]:
    """Return ``[round, cid, norm]`` of a short run of ``name`` without DP (cached)."""
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
    _, task = validate(cfg)
    labels = load_data(task).test.labels  # type: ignore[arg-type]
    return float(labels.bincount().max()) / len(labels)


def series(
    names: list[str], central: list[str], sigmas: list[float]
) -> list[tuple[str, str, float]]:
    """Return the runs ``(algorithm, dp.noise, σ)``: every σ with upload noise, and with central
    (``aggregate``) noise for the algorithms in ``central`` (σ = 0 runs once: no noise at all)."""
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


def _accepted(records: list[dict[str, Any]]) -> int:
    return max(1, sum(r["clients"]["succeeded"] for r in records))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    ap.add_argument("--algorithms", default="ilora,ffa-lora", help="comma-separated names")
    ap.add_argument("--sigmas", default="0,0.5,1,2", help="noise multipliers (0 = no DP)")
    ap.add_argument(
        "--central", default="", help="algorithms that also run with dp.noise=aggregate"
    )
    ap.add_argument("--clip", default="auto", help="dp.clip_norm, or auto (median norm)")
    ap.add_argument("--calib-rounds", type=int, default=3)
    ap.add_argument("--delta", type=float, default=1e-5)
    add_campaign_args(ap, "smoke config, 3 rounds")
    a = ap.parse_args()
    path, out, runs = locations(a, "dp")
    names = a.algorithms.split(",")
    sigmas = [float(s) for s in a.sigmas.split(",")]
    common = ["fed.weighting=uniform", *(["fed.rounds=3"] if a.quick else []), *a.set]
    norm_rows = [
        {"algorithm": n, "round": int(r), "cid": int(c), "norm": v}
        for n in names
        for r, c, v in calibration_norms(path, n, 2 if a.quick else a.calib_rounds, runs)
    ]
    clip = (
        statistics.median(row["norm"] for row in norm_rows) if a.clip == "auto" else float(a.clip)
    )
    rows: list[dict[str, Any]] = []
    round_rows: list[dict[str, Any]] = []
    for name, noise, sigma in series(names, a.central.split(","), sigmas):
        dp = [] if sigma == 0 else [f"dp.clip_norm={clip}", f"dp.noise_multiplier={sigma}"]
        dp += [f"dp.delta={a.delta}", f"dp.noise={noise}"]
        cfg = config.load(path, [f"algorithm={name}", *common, *dp])
        label = "" if noise == "upload" else f"-{noise}"
        summary, records = run_in(cfg, runs / f"{name}{label}-sigma{sigma:g}")
        n, m = cfg.data.num_clients, num_sampled(cfg.data.num_clients, cfg.fed.fraction)
        rounds = summary["rounds"]
        eps = summary.get("epsilon", math.inf)
        rows.append(
            {
                "algorithm": name,
                "noise": noise if sigma > 0 else "",
                "noise_multiplier": sigma,
                "clip_norm": clip if sigma > 0 else "",
                "noise_std_per_entry": noise_std(cfg.dp, m) if sigma > 0 else 0.0,
                "floats_per_upload": summary["total_bytes_up"] / 4 / _accepted(records),
                "delta": a.delta,
                "epsilon": eps,
                "epsilon_poisson": epsilon(sigma, n, m, rounds, a.delta, "poisson"),
                "final_accuracy": summary["final_accuracy"],
                "best_accuracy": summary["best_accuracy"],
                "final_personal_accuracy": summary["final_personal_accuracy"],
                "rounds": rounds,
                "stopped": short_reason(summary.get("stopped", "")),
                "num_clients": n,
                "sampled": m,
                "wall_s": round(summary["wall_s"], 1),
            }
        )
        for r in records:
            round_rows.append(
                {
                    "algorithm": name,
                    "noise": noise if sigma > 0 else "",
                    "noise_multiplier": sigma,
                    "round": r["round"],
                    "accuracy": r.get("accuracy", ""),
                    "epsilon": r.get("epsilon", math.inf),
                }
            )
    written = write_results(
        out,
        {"dp.csv": rows, "rounds.csv": round_rows, "norms.csv": norm_rows},
        a.quick,
        launcher=".venv/bin/python",
        config=str(path),
        clip_norm=clip,
        clip_rule="median calibration norm" if a.clip == "auto" else "given",
        central=a.central,
        majority_class_accuracy=majority_share(config.load(path, common)),
        sampling="fixed-size without replacement; epsilon: replace-one RDP (dp_accounting)",
    )
    for row in rows:
        print(row)
    print(f"written: {out}/{', '.join(written)}")


if __name__ == "__main__":
    main()
