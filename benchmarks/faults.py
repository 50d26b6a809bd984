"""Fault campaign: the same run clean and under a mix of client faults, side by side.

Mix (per sampled client and round, seeded): 30% dropouts (15% before training, 15% after),
10% NaN updates, 10% wrong shapes, 5% stragglers, 10% Byzantine (5% sign-flipped, 5% scaled
x10), with the server's checks on (``fed.max_update_norm``), norm clipping
(``fed.clip_update_norm``) and, for an algorithm whose aggregation is a mean, robust aggregation
(``fed.robust``). Every injected fault must be accounted for: each lost or refused update
appears in ``history.jsonl`` as ``failed`` or ``rejected``. A scaled update exceeds the norm
bound when the bound sits above the honest norms; a sign-flipped one keeps its honest norm and
passes every check on its own. ``--screen C`` adds the ``screened`` run: the same faults with
the direction screen ``fed.min_cosine: C`` on, which compares the round's accepted updates with
their median. ``--controls`` adds, per algorithm, the run in which every faulty client's
update is simply lost (``faults.dropout_before`` = the mix's total: the same clients, drawn from
the same seeded numbers) for the algorithms it names, under the same server guards (checks,
clipping, robust aggregation) as the faulty run: the two differ only in the updates that
arrive, so ``faulty − lost`` (paired by seed) is what the Byzantine updates the defences
accepted cost, which a defence can bring to zero (the target: at most 1 point for every method
whose aggregation is a mean). ``--no-clean`` skips the clean runs. All run with
``fed.min_success: 0``: a round in which every sampled client fails keeps the server's model
instead of stopping the run.

Every run is repeated for each of ``--seeds`` (the run's ``seed``: partition, initialisation,
sampling, fault draws and training); the report gives mean ± std over the seeds and pairs the
gaps by seed.

Writes ``faults.csv`` (one row per run), ``accounting.csv`` (per run and fault kind: injected
vs counted), ``rounds.csv`` (accuracy per round), ``norms.csv`` (the norm ``‖u − sent‖`` of every
update a client produced, before faults and clipping: the evidence for the clip threshold), each
with a ``seed`` column, and ``meta.json`` to ``--out``; the runs go to
``--runs/seed<s>/<algorithm>-<variant>`` (a finished run of the same config is reused).

Run: ``.venv/bin/python benchmarks/faults.py --config configs/bench-faults.yaml --algorithms
ilora,ffa-lora --controls ilora,ffa-lora --clip 12 --max-norm 40 --screen 0 --seeds 0,1,2``;
``--quick``: the smoke config with 10 clients, all sampled, 6 rounds, the first seed only (about
a minute), into ``runs/quick/faults``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from _runs import add_campaign_args, locations, run_in

from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.bench.resultfiles import write_results
from ilora.engine import faults
from ilora.engine.sampling import sample_clients

MIX = {
    "dropout_before": 0.15,
    "dropout_after": 0.15,
    "nan": 0.10,
    "wrong_shape": 0.10,
    "straggler": 0.05,
    "sign_flip": 0.05,
    "scale": 0.05,
}
BYZANTINE = ("sign_flip", "scale")


def variants(a: argparse.Namespace, name: str) -> dict[str, list[str]]:
    """Return the overrides of each run of algorithm ``name``."""
    guard = [f"fed.max_update_norm={a.max_norm}", f"fed.clip_update_norm={a.clip}"]
    if ALGORITHMS.get(name).mean_aggregation and a.robust != "none":
        guard += [f"fed.robust={a.robust}", f"fed.trim_fraction={a.trim}"]
    keep = "fed.min_success=0"  # a round whose every client fails keeps the model
    out = {"faulty": [keep, *guard, *(f"faults.{k}={v}" for k, v in MIX.items())]}
    if a.screen is not None:
        out["screened"] = [*out["faulty"], f"fed.min_cosine={a.screen}"]
    if name in a.controls.split(","):
        out["lost"] = [keep, *guard, f"faults.dropout_before={sum(MIX.values()):.2f}"]
    if not a.no_clean:
        out["clean"] = []
    return out


def accounting(cfg: config.ExperimentConfig, records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Return ``kind -> [injected, counted failed, counted rejected, accepted]`` for a run.

    Sampled clients without a fault count under ``honest`` (an honest update the server
    rejected shows there).
    """
    table: dict[str, list[int]] = {}
    n = cfg.data.num_clients
    for rec in records:
        events = {e["cid"]: e for e in rec["events"]}
        for cid in sample_clients(range(n), cfg.fed.fraction, cfg.seed, rec["round"]):
            kind = faults.draw(cfg.faults, cfg.seed, rec["round"], cid) or "honest"
            row = table.setdefault(kind, [0, 0, 0, 0])
            row[0] += 1
            event = events.get(cid)
            if event is None:
                row[3] += 1
            else:
                row[1 if event["outcome"] == "failed" else 2] += 1
    return table


def _norm_rows(run_dir: Path, key: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the run's recorded update norms (none for a run made without recording)."""
    path = run_dir / "update_norms.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{**key, **row} for row in csv.DictReader(f)]


def seed_list(text: str) -> list[int]:
    """Return the seeds of ``--seeds`` (comma-separated integers, duplicates dropped).

    Raises:
        argparse.ArgumentTypeError: if an item is not an integer.

    """
    try:
        return list(dict.fromkeys(int(s) for s in text.split(",")))
    except ValueError:
        msg = f"--seeds takes comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _run_row(
    key: dict[str, Any],
    cfg: config.ExperimentConfig,
    summary: dict[str, Any],
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """Return the ``faults.csv`` row of one run."""
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


def _accounting_rows(
    key: dict[str, Any], cfg: config.ExperimentConfig, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return the ``accounting.csv`` rows of one run: one per fault kind injected."""
    names = ("injected", "failed", "rejected", "accepted")
    return [
        {**key, "fault": kind, **dict(zip(names, counts, strict=True))}
        for kind, counts in sorted(accounting(cfg, records).items())
    ]


def _campaign(
    a: argparse.Namespace, path: Path, runs: Path, common: list[str], seeds: list[int]
) -> dict[str, list[dict[str, Any]]]:
    """Run (or reuse) every seed, algorithm and variant; return the rows of each table."""
    tables: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("faults.csv", "accounting.csv", "rounds.csv", "norms.csv")
    }
    for s in seeds:
        for name in a.algorithms.split(","):
            for variant, extra in variants(a, name).items():
                cfg = config.load(path, [f"algorithm={name}", *common, *extra, f"seed={s}"])
                run_dir = runs / f"seed{s}" / f"{name}-{variant}"
                summary, records = run_in(cfg, run_dir, record_norms=True)
                key = {"algorithm": name, "variant": variant, "seed": s}
                tables["faults.csv"].append(_run_row(key, cfg, summary, records))
                tables["accounting.csv"] += _accounting_rows(key, cfg, records)
                tables["rounds.csv"] += [
                    {**key, "round": r["round"], "accuracy": r["accuracy"]}
                    for r in records
                    if "accuracy" in r
                ]
                tables["norms.csv"] += _norm_rows(run_dir, key)
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--algorithms", default="ilora", help="comma-separated names")
    ap.add_argument("--seeds", type=seed_list, default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--clip", type=float, default=4.0, help="fed.clip_update_norm")
    ap.add_argument("--max-norm", type=float, default=100.0, help="fed.max_update_norm")
    ap.add_argument("--robust", default="trimmed_mean", help="fed.robust where allowed")
    ap.add_argument("--trim", type=float, default=0.2, help="fed.trim_fraction")
    ap.add_argument(
        "--controls", default="", help="algorithms that also get the lost-updates control run"
    )
    ap.add_argument(
        "--screen",
        type=float,
        default=None,
        help="also run the faults with the direction screen fed.min_cosine at this value",
    )
    ap.add_argument("--no-clean", action="store_true", help="skip the clean runs")
    add_campaign_args(ap, "smoke config, 6 rounds, 10 clients, the first seed only")
    a = ap.parse_args()
    path, out, runs = locations(a, "faults")
    rounds = 6 if a.quick else a.rounds
    quick = ["data.num_clients=10", "fed.fraction=1.0"] if a.quick else []
    seeds = a.seeds[:1] if a.quick else a.seeds
    tables = _campaign(a, path, runs, [f"fed.rounds={rounds}", *quick, *a.set], seeds)
    written = write_results(
        out,
        {name: rows for name, rows in tables.items() if rows},
        a.quick,
        launcher=".venv/bin/python",
        config=str(path),
        rounds=rounds,
        seeds=seeds,
        mix=MIX,
        byzantine_scale=config.FaultConfig().scale_factor,
    )
    for row in tables["faults.csv"]:
        print(row)
    print(f"written: {out}/{', '.join(written)}")


if __name__ == "__main__":
    main()
