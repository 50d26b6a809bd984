"""``ilora bench faults``: the same run clean and under a mix of client faults, side by side.

Mix (:data:`MIX`, per sampled client and round, seeded): 30% dropouts (15% before training,
15% after), 10% NaN updates, 10% wrong shapes, 5% stragglers, 10% Byzantine (5% sign-flipped,
5% scaled x10), with the server's checks on (``fed.max_update_norm``), norm clipping
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
accepted cost, which a defence can bring to zero (the target: at most
:data:`TARGET_POINTS` point for every method whose aggregation is a mean; the faulty run's
mean gap to the clean one has the same bound).
``--no-clean`` skips the clean runs. All run with ``fed.min_success: 0``: a round in which
every sampled client fails keeps the server's model instead of stopping the run.

Every run is repeated for each of ``--seeds`` (the run's ``seed``: partition, initialisation,
sampling, fault draws and training); the report gives mean ± std over the seeds and pairs the
gaps by seed.

Writes ``faults.csv`` (one row per run), ``accounting.csv`` (per run and fault kind: injected
vs counted), ``rounds.csv`` (accuracy per round), ``norms.csv`` (the norm ``‖u − sent‖`` of every
update a client produced, before faults and clipping: the evidence for the clip threshold), each
with a ``seed`` column, and ``meta.json`` to ``--out``; the runs go to
``--runs/seed<s>/<algorithm>-<variant>`` (a finished run of the same config is reused).
The tables' rows are made by :mod:`ilora.bench.faults_rows`.

Run: ``ilora bench faults --config configs/bench-faults.yaml --algorithms ilora,ffa-lora
--controls ilora,ffa-lora --clip 12 --max-norm 40 --screen 0 --seeds 0,1,2``; ``--quick``: the
smoke config with 10 clients, all sampled, 6 rounds, the first seed only (about a minute), into
``runs/quick/faults``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ilora import config
from ilora.bench.campaign import Campaign
from ilora.bench.campaign import outcomes
from ilora.bench.jobs import Job
from ilora.bench.runner import Record

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
TARGET_POINTS = 1.0  # accuracy points: |faulty − clean| and faulty − lost ≥ −TARGET_POINTS
MIN_SUCCESS = 0  # fed.min_success: a round whose every client fails keeps the model
TABLES = ("faults.csv", "accounting.csv", "rounds.csv", "norms.csv")


@dataclass(frozen=True)
class Plan:
    """The campaign (see the module docstring)."""

    campaign: Campaign
    rounds: int = 20
    algorithms: tuple[str, ...] = ("ilora",)
    seeds: tuple[int, ...] = (0, 1, 2)
    clip: float = 4.0
    max_norm: float = 100.0
    robust: str = "trimmed_mean"
    trim: float = 0.2
    controls: tuple[str, ...] = ()
    screen: float | None = None
    no_clean: bool = False


def variants(plan: Plan, name: str) -> dict[str, list[str]]:
    """Return the overrides of each run of algorithm ``name``."""
    from ilora.algorithms.base import ALGORITHMS

    guard = [f"fed.max_update_norm={plan.max_norm}", f"fed.clip_update_norm={plan.clip}"]
    if ALGORITHMS.get(name).mean_aggregation and plan.robust != "none":
        guard += [f"fed.robust={plan.robust}", f"fed.trim_fraction={plan.trim}"]
    keep = f"fed.min_success={MIN_SUCCESS}"
    out = {"faulty": [keep, *guard, *(f"faults.{k}={v}" for k, v in MIX.items())]}
    if plan.screen is not None:
        out["screened"] = [*out["faulty"], f"fed.min_cosine={plan.screen}"]
    if name in plan.controls:
        out["lost"] = [keep, *guard, f"faults.dropout_before={sum(MIX.values()):.2f}"]
    if not plan.no_clean:
        out["clean"] = []
    return out


def _jobs(
    plan: Plan, path: Path, runs: Path, common: list[str], seeds: tuple[int, ...]
) -> list[tuple[dict[str, object], Job]]:
    """Return ``(row key, job)`` of every seed, algorithm and variant, norms recorded."""
    out: list[tuple[dict[str, object], Job]] = []
    for s in seeds:
        for name in plan.algorithms:
            for variant, extra in variants(plan, name).items():
                overrides = (f"algorithm={name}", *common, *extra, f"seed={s}")
                where = runs / f"seed{s}" / f"{name}-{variant}"
                job = Job(
                    f"faults seed {s} {where.name}", path, overrides, where, record_norms=True
                )
                out.append(({"algorithm": name, "variant": variant, "seed": s}, job))
    return out


def _campaign(
    plan: Plan, path: Path, runs: Path, common: list[str], seeds: tuple[int, ...]
) -> dict[str, list[Record]]:
    """Run (or reuse) every seed, algorithm and variant; return the rows of each table."""
    from ilora.bench import faults_rows

    jobs = _jobs(plan, path, runs, common, seeds)
    done = outcomes([job for _, job in jobs], plan.campaign.workers)
    tables: dict[str, list[Record]] = {name: [] for name in TABLES}
    for (key, job), (summary, records) in zip(jobs, done, strict=True):
        made = faults_rows.rows(key, job.config(), summary, records, job.run_dir)
        for table, rows in made.items():
            tables[table] += rows
    return tables


def run(plan: Plan) -> list[Path]:
    """Run (or reuse) every run of ``plan``, write the result files; return their paths."""
    from ilora.bench.resultfiles import write_results

    path, out, runs = plan.campaign.locations("faults")
    quick = plan.campaign.quick
    rounds = 6 if quick else plan.rounds
    small = ["data.num_clients=10", "fed.fraction=1.0"] if quick else []
    seeds = plan.seeds[:1] if quick else plan.seeds
    common = [f"fed.rounds={rounds}", *small, *plan.campaign.sets]
    tables = _campaign(plan, path, runs, common, seeds)
    for row in tables["faults.csv"]:
        print(row)
    names = write_results(
        out,
        {name: rows for name, rows in tables.items() if rows},
        quick,
        config=str(path),
        rounds=rounds,
        seeds=list(seeds),
        mix=MIX,
        byzantine=list(BYZANTINE),
        byzantine_scale=config.FaultConfig().scale_factor,
        target_points=TARGET_POINTS,
        min_success=MIN_SUCCESS,
    )
    return [out / name for name in names]
