"""The protocol's phases as runs plus decisions: tune, horizon, compare (see ``protocol``).

Every decision is recomputed from the finished runs on disk, so an invocation that stopped
anywhere continues where it left off and reaches the same choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ilora import config as config_mod
from ilora.bench import tuning
from ilora.bench.jobs import Job
from ilora.bench.jobs import pending
from ilora.bench.jobs import run_jobs
from ilora.bench.protocol import CENTRALIZED
from ilora.bench.protocol import Protocol
from ilora.bench.protocol import Variant
from ilora.bench.protocol import federated
from ilora.bench.runner import STOPPED
from ilora.bench.runner import SUMMARY
from ilora.config import ConfigError

Report = Callable[[str], None]


@dataclass(frozen=True)
class Tuned:
    """A variant's tuning outcome on one task."""

    variant: Variant
    scores: dict[float, float]  # rate -> validation score (NaN: diverged or stopped)
    rate: float
    at_edge: bool  # the best rate is still at an edge after the allowed extensions


def _scores(proto: Protocol, task: str, variant: Variant, rates: list[float]) -> dict[float, float]:
    out = {}
    for rate in rates:
        job = proto.tune_job(task, variant, rate)
        out[rate] = tuning.score(job.history(), variant.metric)
    return out


def _next_rates(
    proto: Protocol, task: str, rates: dict[Variant, list[float]], report: Report
) -> list[Variant]:
    """Append to each variant's rates its next one while its best sits at an edge; return those."""
    grid = tuning.rate_grid(proto.low_rate, proto.n_rates)
    extended = []
    for variant, tried in rates.items():
        scores = _scores(proto, task, variant, tried)
        nxt = tuning.extension(scores, grid)
        if nxt is None or nxt in scores:
            continue
        report(f"{task} {variant.label}: best rate at the edge of {sorted(tried)}; adding {nxt:g}")
        tried.append(nxt)
        extended.append(variant)
    return extended


def tune(proto: Protocol, task: str, workers: int, report: Report) -> list[Tuned]:
    """Tune every variant on ``task`` and write the tuned-rates file presets include.

    Every variant's grid runs in one pool, then each round of edge extensions (one rate per
    variant still at an edge) runs together: a variant's extension depends on its own scores
    only, so the rates chosen are those of tuning one variant at a time, with the workers kept
    busy across variants instead of one idling through each lone extension run.
    """
    grid = tuning.rate_grid(proto.low_rate, proto.n_rates)
    rates = {variant: list(grid) for variant in proto.variants}
    todo = list(proto.variants)
    while todo:
        jobs = [proto.tune_job(task, v, r) for v in todo for r in rates[v]]
        run_jobs(pending(jobs), workers, report, proto.keep)
        todo = _next_rates(proto, task, {v: rates[v] for v in todo}, report)
    results = [_tuned(v, _scores(proto, task, v, rates[v])) for v in proto.variants]
    write_tuned(proto, task, results)
    return results


def _tuned(variant: Variant, scores: dict[float, float]) -> Tuned:
    rate = tuning.choose(scores)
    edge = rate in (min(scores), max(scores)) and len(scores) > 1
    return Tuned(variant, scores, rate, edge)


def write_tuned(proto: Protocol, task: str, results: list[Tuned]) -> None:
    """Write ``per_algorithm: {name: {train: {lr}}}`` for the plain (argument-free) variants.

    Methods tuned by an earlier invocation and not by this one keep their rates, so tuning a
    few variants again (``--variants``) does not drop the others.
    """
    path = proto.tuned_file(task)
    old = yaml.safe_load(path.read_text()) if path.is_file() else None
    plain = dict((old or {}).get("per_algorithm", {}))
    plain.update(
        {t.variant.algorithm: {"train": {"lr": t.rate}} for t in results if not t.variant.args}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (
        f"# Learning rates chosen on validation by `ilora bench protocol` ({task}); "
        "included by presets and the demo.\n# Rewritten by every tune; edit the protocol, "
        "not this file.\n"
    )
    path.write_text(head + yaml.safe_dump({"per_algorithm": plain}, sort_keys=True))


def tuned_rates(proto: Protocol, task: str) -> dict[str, float]:
    """Return ``{variant label: chosen rate}`` from the finished tuning runs (no new runs).

    Raises:
        ValueError: naming every variant whose tuning (in the protocol's tuning setting) is
            not finished, and the command that finishes it.

    """
    grid = tuning.rate_grid(proto.low_rate, proto.n_rates)
    out, missing = {}, {}
    for variant in proto.variants:
        rates = _tried_rates(proto, task, variant, grid)
        jobs = [proto.tune_job(task, variant, r) for r in rates]
        left = sum(not j.decided() for j in jobs)
        scores = _scores(proto, task, variant, rates)
        if left == len(jobs):
            missing[variant.label] = f"no tuning run in {jobs[0].run_dir.parent}"
        elif left:
            missing[variant.label] = f"{left} of {len(jobs)} tuning runs missing"
        elif tuning.extension(scores, grid) not in (None, *scores):
            missing[variant.label] = "its best rate is at the grid's edge, not extended yet"
        elif all(math.isnan(s) for s in scores.values()):
            missing[variant.label] = "every rate tried diverged"
        else:
            out[variant.label] = tuning.choose(scores)
    if missing:
        raise proto.untuned(task, missing)
    return out


def tuning_runs(proto: Protocol, task: str) -> list[tuple[Variant, Job]]:
    """Return ``task``'s tuning runs known so far (every variant's grid and extensions on disk)."""
    grid = tuning.rate_grid(proto.low_rate, proto.n_rates)
    return [
        (v, proto.tune_job(task, v, rate))
        for v in proto.variants
        for rate in _tried_rates(proto, task, v, grid)
    ]


def _tried_rates(proto: Protocol, task: str, variant: Variant, grid: list[float]) -> list[float]:
    """Return the grid plus every extension rate that has a run directory."""
    rates = list(grid)
    root = proto.phase_dir(task, "tune") / variant.label
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith("lr"):
                rate = float(d.name[2:])
                if rate not in rates:
                    rates.append(rate)
    return sorted(rates)


@dataclass(frozen=True)
class Horizon:
    """The comparison's number of rounds and how it was found."""

    rounds: int
    plateaus: dict[str, int | None]  # variant label -> plateau round (None: never)


def horizon(
    proto: Protocol, task: str, rates: dict[str, float], workers: int, report: Report
) -> Horizon:
    """Run the centralized line and the best method (``horizon_variant``) long; return rounds."""
    runs = horizon_jobs(proto, task, rates)
    run_jobs(pending([job for _, job in runs]), workers, report, proto.keep)
    return found_horizon(proto, runs)


def horizon_jobs(proto: Protocol, task: str, rates: dict[str, float]) -> list[tuple[Variant, Job]]:
    """Return the horizon's runs: the centralized line and ``horizon_variant``, with their jobs."""
    proto.check_rates(task, rates)
    best = horizon_variant(proto.variants, _best_scores(proto, task, rates))
    chosen = [v for v in proto.variants if v.label in (CENTRALIZED, best.label)]
    return [(v, proto.horizon_job(task, v, rates[v.label])) for v in chosen]


def found_horizon(proto: Protocol, runs: Sequence[tuple[Variant, Job]]) -> Horizon:
    """Return the horizon the finished ``runs`` (of :func:`horizon_jobs`) set."""
    plateaus = {v.label: tuning.plateau_round(job.history()) for v, job in runs}
    known = [r for r in plateaus.values() if r is not None]
    rounds = max(known) if len(known) == len(plateaus) else proto.max_rounds
    return Horizon(rounds, plateaus)


def horizon_variant(variants: Sequence[Variant], scores: Mapping[str, float]) -> Variant:
    """Return the federated method with the best validation ``scores`` (by variant label).

    Ablations (``name+key=value``) are candidates only when no plain method is given, so adding
    an ablation to a task's comparison never moves its horizon, nor with it the finished runs.
    """
    fed = federated(variants)
    methods = [v for v in fed if not v.args] or fed
    return max(methods, key=lambda v: scores.get(v.label, -math.inf))


def _best_scores(proto: Protocol, task: str, rates: dict[str, float]) -> dict[str, float]:
    out = {}
    for variant in proto.variants:
        if variant.label in rates:
            job = proto.tune_job(task, variant, rates[variant.label])
            out[variant.label] = tuning.score(job.history())
    return out


def compare(
    proto: Protocol, task: str, rates: dict[str, float], rounds: int, workers: int, report: Report
) -> list[Job]:
    """Run every comparison run of ``task`` not finished yet; return all of them."""
    jobs = list(proto.compare_jobs(task, rates, rounds))
    todo = pending(jobs)
    check_no_replacement(task, todo)
    run_jobs(todo, workers, report, proto.keep)
    return jobs


def check_no_replacement(task: str, todo: Sequence[Job]) -> None:
    """Raise ``ValueError`` when a run to make would replace a finished run of another config.

    The result files are rebuilt from the run directories, so a replaced run would mix, say,
    two horizons in one table: a comparison whose horizon moved (a method added to
    ``--variants`` that beats the one the horizon was found with) stops here, before any run.
    """
    held = [j for j in todo if any((j.run_dir / m).is_file() for m in (SUMMARY, STOPPED))]
    if held:
        raise ValueError(
            f"{task}: {len(held)} comparison run(s) would replace finished runs of another "
            f"config, e.g. {held[0].run_dir} ({config_changes(held[0])}); the horizon or a "
            "tuned rate moved since they ran. Delete those run directories to make them "
            "again, or compare without the method that moved the horizon"
        )


def config_changes(job: Job) -> str:
    """Return what differs between the config stored in ``job.run_dir`` and the job's own."""
    try:
        old = _flat(config_mod.to_dict(config_mod.load(job.run_dir / "config.yaml")))
    except (OSError, ConfigError) as err:
        return f"its config.yaml does not load: {err}"
    new = _flat(config_mod.to_dict(job.config()))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)} → {new.get(k)}" for k in keys)


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
