"""Render ``results/faults/`` (``ilora bench faults``) as a RESULTS.md section.

Reads ``faults.csv`` (one row per run: algorithm, variant ``clean | faulty | lost``, seed, final
accuracy, accepted / failed / rejected updates, the guards), ``accounting.csv`` (per run and
fault kind: injected vs counted as failed, rejected or accepted), ``rounds.csv`` (accuracy per
round), ``norms.csv`` (the norm of every update produced) and ``meta.json`` only. Files without
a ``seed`` column (one run per algorithm and variant) read as seed 0. Accuracies are mean ±
sample std over the seeds; gaps between variants are paired by seed. Target of issue 7: the
faulty run completes, every bad update is rejected and counted, and its mean final accuracy is
within ``target_points`` (``meta.json``) of the clean run's, read by :func:`stats.mean_within`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report import stats
from ilora.report._faults_counts import FAULTED
from ilora.report._faults_counts import Row
from ilora.report._faults_counts import Runs
from ilora.report._faults_counts import accounting
from ilora.report._faults_counts import norms_sentences
from ilora.report._faults_counts import seed_of
from ilora.report._plot import line_chart
from ilora.report._plot import round_means
from ilora.report._plot import save_png
from ilora.report._table import fmt
from ilora.report._table import md_table
from ilora.report._table import num
from ilora.report._table import pm
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head
from ilora.report._table import seeds_words

TAIL = 5  # rounds in the tail mean: the final accuracy of one run moves by points round to round
UPDATES = ("accepted", "failed", "rejected")
VARIANTS = {
    "clean": "clean",
    "faulty": "faults + checks + clipping",
    "screened": "faults + checks + clipping + direction screen",
    "lost": "control: every faulty update lost",
}
BySeed = Mapping[int, float]


def _pct(x: str | float) -> float:
    return 100 * num(x)


def _group(rows: Iterable[Row]) -> Runs:
    """Return the runs by algorithm, variant and seed (in the order they first appear)."""
    out: Runs = {}
    for r in rows:
        out.setdefault(r["algorithm"], {}).setdefault(r["variant"], {})[seed_of(r)] = r
    return out


def _finals(by_seed: Mapping[int, Row], key: str = "final_accuracy") -> dict[int, float]:
    return {s: _pct(r[key]) for s, r in by_seed.items()}


def _paired(a: BySeed, b: BySeed) -> dict[int, float]:
    """Return ``a - b`` for every seed both hold."""
    return {s: a[s] - b[s] for s in sorted(a.keys() & b.keys())}


def _gap(gaps: BySeed) -> str:
    """Return the mean ± std of per-seed gaps, signed (``n/a`` when none is finite)."""
    mean, std = stats.mean_std(gaps.values())
    return "n/a" if math.isnan(mean) else f"{mean:+.2f} ± {std:.2f}"


def _per_seed(gaps: BySeed) -> str:
    return ", ".join(f"seed {s} {'n/a' if math.isnan(g) else f'{g:+.2f}'}" for s, g in gaps.items())


def _acc(values: BySeed) -> str:
    """Return ``mean ± std`` of accuracies, saying how many seeds finished when some stopped."""
    cell = pm(*stats.mean_std(values.values()))
    done = sum(not math.isnan(v) for v in values.values())
    return cell if done == len(values) else f"{cell} ({done} of {len(values)} finished)"


def _mean_of(rows: Iterable[Row], key: str) -> float:
    return statistics.fmean(num(r[key]) for r in rows)


def _guard(row: Row) -> str:
    if row["variant"] not in FAULTED:
        return "-"
    parts = [f"clip {float(row['clip_update_norm']):g}", f"max {float(row['max_update_norm']):g}"]
    if row["robust"] != "none":
        trimmed = row["robust"] == "trimmed_mean" and str(row.get("trim_fraction", "")) != ""
        beta = f" β={float(row['trim_fraction']):g}" if trimmed else ""
        parts.append(f"{row['robust']}{beta}".replace(" β=nan", ""))
    if float(row.get("min_cosine") or -1) > -1:
        parts.append(f"min cosine {float(row['min_cosine']):g}")
    return ", ".join(parts)


def _summary_table(runs: Runs) -> str:
    """Return one row per algorithm and variant: accuracy over seeds, updates per run."""
    headers = ["algorithm", "run", "seeds", "final accuracy % (mean ± std)"]
    headers += ["best accuracy % (mean)", "accepted / failed (lost) / rejected, mean per run"]
    headers.append("server guards")
    body = []
    for alg, variants in runs.items():
        for variant, by_seed in variants.items():
            best = stats.mean_std(_finals(by_seed, "best_accuracy").values())[0]
            counts = " / ".join(f"{_mean_of(by_seed.values(), k):.1f}" for k in UPDATES)
            guard = _guard(next(iter(by_seed.values())))
            run = VARIANTS.get(variant, variant)
            body.append([alg, run, len(by_seed), _acc(_finals(by_seed)), fmt(best), counts, guard])
    return md_table(headers, body).strip()


def _runs_table(runs: Runs) -> str:
    headers = ["algorithm", "run", "seed", "final accuracy %", "best accuracy %", "accepted"]
    headers += ["failed (lost)", "rejected", "sampled", "rounds without an accepted update"]
    body = [
        [alg, VARIANTS.get(variant, variant), seed, fmt(_pct(r["final_accuracy"]))]
        + [fmt(_pct(r["best_accuracy"])), *(r[k] for k in (*UPDATES, "sampled"))]
        + [r.get("empty_rounds", "n/a")]
        for alg, variants in runs.items()
        for variant, by_seed in variants.items()
        for seed, r in sorted(by_seed.items())
    ]
    return md_table(headers, body).strip()


def _tail_means(rounds: Sequence[Row], last: int) -> dict[tuple[str, str, int], float]:
    """Return the mean accuracy (%) over each run's last ``last`` evaluated rounds."""
    curves: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
    for r in rounds:
        key = (r["algorithm"], r["variant"], seed_of(r))
        curves.setdefault(key, []).append((int(r["round"]), _pct(r["accuracy"])))
    return {key: statistics.fmean(a for _, a in sorted(pts)[-last:]) for key, pts in curves.items()}


def target_points(meta: Mapping[str, Any]) -> float | None:
    """Return the campaign's target in accuracy points (``meta.json``), None if not recorded."""
    value = meta.get("target_points")
    return None if value is None else float(value)


def _target_words(gaps: BySeed, target: float | None) -> str:
    """Return whether the mean gap is within the target (:func:`stats.mean_within`)."""
    if target is None:
        return "the target was not recorded"
    within = stats.mean_within(stats.mean_ci(gaps.values()), target)
    return f"the mean gap is {'within' if within else 'not within'} the {target:g}-point target"


def _faulty_sentence(
    alg: str,
    variant: str,
    variants: Mapping[str, Mapping[int, Row]],
    tails: BySeed,
    target: float | None,
) -> str:
    """Return how the runs of ``variant`` (under faults) compare with the clean ones, by seed."""
    faulty, clean = variants[variant], variants["clean"]
    gaps = _paired(_finals(faulty), _finals(clean))
    rounds = sorted({int(r["rounds"]) for r in faulty.values()})
    span = f"all {rounds[0]}" if len(rounds) == 1 else f"{rounds[0]} to {rounds[-1]}"
    accepted = sum(int(r["accepted"]) for r in faulty.values())
    sampled = sum(int(r["sampled"]) for r in faulty.values())
    return (
        f"{alg}, {VARIANTS[variant]}: the runs ({seeds_words(len(faulty))}) completed {span} "
        f"rounds with {accepted} of {sampled} sampled updates accepted in total and reached "
        f"{_acc(_finals(faulty))}% against {_acc(_finals(clean))}% clean. Paired by seed, "
        f"{variant} − clean is {_gap(gaps)} points ({_per_seed(gaps)}); "
        f"{_target_words(gaps, target)}. Over the mean of the last {TAIL} evaluated rounds, "
        f"averaged over seeds, the gap is {_gap(tails)} points."
    )


def _lost_sentence(variants: Mapping[str, Mapping[int, Row]]) -> str:
    """Return what the lost-updates control says, paired by seed."""
    clean, lost = _finals(variants["clean"]), _finals(variants["lost"])
    out = (
        f"The control that simply loses every faulty client's update (the same clients, "
        f"{_mean_of(variants['lost'].values(), 'accepted'):.1f} accepted updates per run) "
        f"reaches {_acc(lost)}% ({_gap(_paired(lost, clean))} points from clean, paired by "
        "seed): that much comes from the lost data alone."
    )
    for variant in (v for v in FAULTED if v in variants):
        to_control = _paired(_finals(variants[variant]), lost)
        guard = _guard_words(variants[variant])
        out += (
            f" The {variant} runs ({guard}) end {_gap(to_control)} points from the control "
            f"({_per_seed(to_control)}): what the Byzantine updates they accepted cost."
        )
    return out


def _guard_words(by_seed: Mapping[int, Row]) -> str:
    return _guard(next(iter(by_seed.values())))


def _verdicts(
    runs: Runs, tails: Mapping[tuple[str, str, int], float], meta: Mapping[str, Any]
) -> list[str]:
    """Return the sentences comparing each algorithm's faulty (and control) runs with clean."""
    out = []
    keep = meta.get("min_success", "not recorded")
    for alg, variants in runs.items():
        if "clean" not in variants or "faulty" not in variants:
            continue
        tail = {v: {s: x for (a, w, s), x in tails.items() if (a, w) == (alg, v)} for v in VARIANTS}
        for variant in (v for v in FAULTED if v in variants):
            gaps = _paired(tail[variant], tail["clean"])
            out.append(_faulty_sentence(alg, variant, variants, gaps, target_points(meta)))
        empty = sum(int(r.get("empty_rounds") or 0) for r in variants["faulty"].values())
        if empty:
            out.append(
                f"In {empty} of its rounds (over all seeds) every sampled client failed; the "
                f"server kept its model (`fed.min_success: {keep}`; with 1 the run stops there "
                "with exit code 3)."
            )
        if "lost" in variants:
            out.append(_lost_sentence(variants))
    return out


def _figure(rows: Sequence[Row], img: Path) -> str:
    """Plot the seed-mean accuracy per round of every algorithm and variant."""
    history: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in rows:
        rec = {"round": float(r["round"]), "accuracy": num(r["accuracy"])}
        history.setdefault((f"{r['algorithm']} {r['variant']}", seed_of(r)), []).append(rec)
    runs = [{"algorithm": label, "history": h} for (label, _), h in history.items()]
    series = round_means(runs, "accuracy", 100.0)
    title = "Global test accuracy under faults (mean over seeds)"
    fig = line_chart(series, title, "round", "accuracy %")
    return save_png(fig, img, "faults-accuracy", "mean accuracy per round, clean vs faulty")


def _setting(meta: Mapping[str, Any], seeds: Sequence[int]) -> str:
    mix = meta.get("mix", {})
    shares = ", ".join(f"{k} {100 * float(v):g}%" for k, v in sorted(mix.items()))
    return (
        f"Setting: `{meta.get('config', '?')}`, {meta.get('rounds', '?')} rounds, seeds "
        f"{', '.join(map(str, seeds))}. Faults per sampled client and round (seeded): {shares}; "
        f"a scaled update is multiplied by {meta.get('byzantine_scale', '?')}. The control run "
        "loses the updates of exactly the clients the mix hits (the same seeded draws), so it "
        "isolates the lost data. Final accuracy is on the whole test split; best is over the "
        "per-round evaluations on the seeded subset. Accuracies are mean ± sample std over the "
        "seeds; a gap between two runs is taken per seed, then averaged."
    )


def render(src: Path, img: Path) -> str:
    """Return the fault campaign section (see the module docstring)."""
    meta = read_meta(src)
    runs = _group(read_csv(src / "faults.csv"))
    rounds = read_csv(src / "rounds.csv")
    table, accounted = accounting(read_csv(src / "accounting.csv"))
    norms = read_csv(src / "norms.csv") if (src / "norms.csv").is_file() else []
    seeds = sorted({s for variants in runs.values() for v in variants.values() for s in v})
    parts = [
        *section_head("## Fault campaign: dropouts, corrupt and Byzantine updates", meta),
        _setting(meta, seeds),
        _summary_table(runs),
        " ".join(_verdicts(runs, _tail_means(rounds, TAIL), meta)),
        "### Every run",
        _runs_table(runs),
        "### Every injected fault, counted",
        table,
        " ".join(accounted),
        " ".join(norms_sentences(norms, runs)),
        _figure(rounds, img),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
