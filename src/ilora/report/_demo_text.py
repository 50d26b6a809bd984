"""The sentences under the demo tables, each computed from the comparison rows.

Rows are :func:`ilora.report._table.comparison_rows` (accuracies in %, bytes per round). Only
the explanations of a method's own mechanics (:data:`MECHANICS`) are fixed text; every number
and every "above"/"below" comes from the data.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from ilora.report import stats
from ilora.report._code_facts import SOURCE_WORDS
from ilora.report._code_facts import algorithm_facts
from ilora.report._code_facts import sci
from ilora.report._table import CENTRAL

Row = Mapping[str, Any]
FOCUS, PLAIN = "ilora-s", "ilora"
EXACT, SMALL, MEDIUM = 1e-3, 0.05, 0.3  # agg_error classes
PERSONAL_GAIN = 10.0  # points of personalized over global accuracy that mark a personal model
DENSE_DOWN = 10.0  # download at least this many times FedIT's: a dense residual travels
MECHANICS = {  # {field} and {field_source} are read from the algorithm's class
    "flasc": (
        "FLASC applies the clients' sparse deltas with server Adam at {server_lr_source} lr "
        "{server_lr}, which moves each coordinate by at most about {server_lr} per round"
    ),
    "fedsa-lora": "FedSA-LoRA's global model is the pretrained one with the initial head",
}


def mechanics(name: str) -> str | None:
    """Return :data:`MECHANICS` of algorithm ``name`` filled with its defaults from the code."""
    if name not in MECHANICS:
        return None
    facts = algorithm_facts(name)
    words = {k: sci(v) if isinstance(v, float) else v for k, v in facts.items()}
    words.update({k: SOURCE_WORDS.get(v, v) for k, v in facts.items() if k.endswith("_source")})
    return MECHANICS[name].format(**words)


def per_seed(runs: Sequence[Mapping[str, Any]]) -> str:
    """Return the final accuracy of every run by method, seeds in order."""
    by_alg: dict[str, list[tuple[int, float]]] = {}
    for r in runs:
        by_alg.setdefault(r["algorithm"], []).append((r["seed"], 100 * r["final_accuracy"]))
    seeds = sorted({s for vals in by_alg.values() for s, _ in vals})
    order = sorted(by_alg, key=lambda a: -statistics.fmean(v for _, v in by_alg[a]))
    items = [f"{a} {', '.join(f'{v:.1f}' for _, v in sorted(by_alg[a]))}" for a in order]
    return f"Per seed ({', '.join(map(str, seeds))}), final accuracy %: " + "; ".join(items) + ".\n"


def _fed(rows: Sequence[Row]) -> list[Row]:
    return sorted(
        (r for r in rows if r["algorithm"] != CENTRAL and not math.isnan(r["final_accuracy_mean"])),
        key=lambda r: -r["final_accuracy_mean"],
    )


def _find(rows: Sequence[Row], name: str) -> Row | None:
    return next((r for r in rows if r["algorithm"] == name), None)


def _by_seed(runs: Sequence[Row], name: str) -> dict[int, float]:
    return {int(r["seed"]): 100 * r["final_accuracy"] for r in runs if r["algorithm"] == name}


def headline(rows: Sequence[Row], runs: Sequence[Row]) -> str:
    """Return where ILoRA-S stands among the federated methods, and whether the seeds settle it.

    ``rows`` are the per-method means; ``runs`` the per-seed runs, for the paired differences
    against the nearest other method and against FedIT (the rule of ``report.stats``).
    """
    fed, focus = _fed(rows), _find(rows, FOCUS)
    if focus is None or len(fed) < 2:
        return ""
    rank = next(i for i, r in enumerate(fed, 1) if r["algorithm"] == FOCUS)
    mean = focus["final_accuracy_mean"]
    rival = next(r for r in fed if r["algorithm"] != FOCUS)
    where = (
        f"the highest mean final accuracy of the {len(fed)} federated methods ({mean:.1f}%)"
        if rank == 1
        else f"rank {rank} of {len(fed)} federated methods ({mean:.1f}%)"
    )
    mine = _by_seed(runs, FOCUS)
    versus = [rival["algorithm"]] + (["fedit"] if rival["algorithm"] != "fedit" else [])
    pairs = " ".join(
        stats.compare_sentence(FOCUS, other, stats.paired(mine, _by_seed(runs, other)))
        for other in versus
        if _find(rows, other) is not None
    )
    text = f"- **{FOCUS} against the baselines.** {FOCUS} has {where}. {pairs}"
    plain = _find(fed, PLAIN)
    if plain is not None:
        prank = next(i for i, r in enumerate(fed, 1) if r["algorithm"] == PLAIN)
        text += f" Plain {PLAIN} ranks {prank} ({plain['final_accuracy_mean']:.1f}%)."
    central = _find(rows, CENTRAL)
    if central is not None:
        best = fed[0]["final_accuracy_mean"]
        c = central["final_accuracy_mean"]
        text += (
            f" The best federated mean ({best:.1f}%) is {c - best:.1f} points below the "
            f"centralized line ({c:.1f}%)."
        )
    return text + "\n"


def _names(rows: Sequence[Row], key: str, digits: int = 3, scale: float = 1.0) -> str:
    return ", ".join(f"{r['algorithm']} {scale * r[key]:.{digits}f}" for r in rows)


def aggregation(rows: Sequence[Row]) -> str:
    """Return the methods grouped by mean aggregation error, and its link to accuracy."""
    fed = [r for r in _fed(rows) if not math.isnan(r["mean_agg_error"])]
    if not fed:
        return ""
    fed.sort(key=lambda r: r["mean_agg_error"])
    groups = [
        ("exact (below 0.001)", [r for r in fed if r["mean_agg_error"] < EXACT]),
        ("below 5%", [r for r in fed if EXACT <= r["mean_agg_error"] < SMALL]),
        ("5-30%", [r for r in fed if SMALL <= r["mean_agg_error"] < MEDIUM]),
        ("30% or more", [r for r in fed if r["mean_agg_error"] >= MEDIUM]),
    ]
    parts = [f"{label}: {_names(g, 'mean_agg_error')}" for label, g in groups if g]
    undefined = [r["algorithm"] for r in _fed(rows) if math.isnan(r["mean_agg_error"])]
    errors, accuracies = [r["mean_agg_error"] for r in fed], [r["final_accuracy_mean"] for r in fed]
    rho = stats.spearman(errors, accuracies)
    text = "- **Aggregation error** (mean over rounds): " + "; ".join(parts) + "."
    if undefined:
        text += f" Not defined for {', '.join(undefined)} (no single global product)."
    if not math.isnan(rho):
        text += (
            f" Across these {len(fed)} methods Spearman's rank correlation between the error and "
            f"final accuracy is {rho:+.2f}."
        )
    return text + "\n"


def personalization(rows: Sequence[Row]) -> str:
    """Return the methods whose clients' own models beat the global model by a wide margin."""
    gains = [
        r
        for r in _fed(rows)
        if r["personal_accuracy_mean"] - r["final_accuracy_mean"] >= PERSONAL_GAIN
    ]
    if not gains:
        return ""
    gains.sort(key=lambda r: -r["personal_accuracy_mean"])
    items = ", ".join(
        f"{r['algorithm']} {r['personal_accuracy_mean']:.1f}% "
        f"(global {r['final_accuracy_mean']:.1f}%)"
        for r in gains
    )
    text = (
        f"- **Personalization.** On their own test shares the clients of {len(gains)} method(s) "
        f"score at least {PERSONAL_GAIN:.0f} points above the global model: {items}."
    )
    central = _find(rows, CENTRAL)
    if central is not None and not math.isnan(central["personal_accuracy_mean"]):
        c = central["personal_accuracy_mean"]
        above = [r["algorithm"] for r in gains if r["personal_accuracy_mean"] > c]
        text += f" The centralized model scores {c:.1f}% on the same shares"
        text += f"; {', '.join(above)} score above it." if above else "."
    return text + "\n"


def communication(rows: Sequence[Row]) -> str:
    """Return bytes per round relative to FedIT: dense downloads, the smallest uploads."""
    base = _find(rows, "fedit")
    fed = [r for r in _fed(rows) if r["bytes_down_per_round"] > 0]
    if base is None or not fed:
        return ""
    down0, up0 = base["bytes_down_per_round"], base["bytes_up_per_round"]
    dense = sorted(
        (r for r in fed if r["bytes_down_per_round"] >= DENSE_DOWN * down0),
        key=lambda r: r["bytes_down_per_round"],
    )
    parts = []
    if dense:
        lo, hi = dense[0]["bytes_down_per_round"], dense[-1]["bytes_down_per_round"]
        parts.append(
            f"{', '.join(r['algorithm'] for r in dense)} download {lo / 1e6:.1f}-{hi / 1e6:.1f} "
            f"MB per round, {lo / down0:.0f}-{hi / down0:.0f}x fedit's {down0 / 1e6:.3f} MB"
        )
    small = min(fed, key=lambda r: r["bytes_up_per_round"])
    parts.append(
        f"the smallest upload is {small['algorithm']}'s ({small['bytes_up_per_round'] / 1e6:.3f} "
        f"MB, {100 * small['bytes_up_per_round'] / up0:.0f}% of fedit's)"
    )
    focus, plain = _find(rows, FOCUS), _find(rows, PLAIN)
    if focus is not None and plain is not None:
        parts.append(
            f"{FOCUS} sends {focus['bytes_up_per_round'] / plain['bytes_up_per_round']:.2f}x "
            f"{PLAIN}'s upload and receives "
            f"{focus['bytes_down_per_round'] / plain['bytes_down_per_round']:.2f}x its download"
        )
    return "- **Communication.** " + "; ".join(parts) + ".\n"


def lowest(rows: Sequence[Row]) -> str:
    """Return the weakest non-personalized method and, where known, why."""
    plain = [
        r
        for r in _fed(rows)
        if r["personal_accuracy_mean"] - r["final_accuracy_mean"] < PERSONAL_GAIN
        or math.isnan(r["personal_accuracy_mean"])
    ]
    if not plain:
        return ""
    worst = plain[-1]
    text = (
        f"- **Lowest.** The lowest global accuracy without a personal model is "
        f"{worst['algorithm']}'s ({worst['final_accuracy_mean']:.1f}%)"
    )
    why = mechanics(worst["algorithm"])
    return text + (f": {why}.\n" if why else ".\n")


def method_rates(runs: Sequence[Row]) -> dict[str, float]:
    """Return each method's LoRA rate from its runs (``lr``; runs without one are left out)."""
    return {r["algorithm"]: r["lr"] for r in runs if not math.isnan(r.get("lr", math.nan))}


def own_rates(rates: Mapping[str, float], setting_lr: float) -> dict[str, float]:
    """Return the methods whose rate differs from the setting's, with their rates."""
    return {a: v for a, v in sorted(rates.items()) if not math.isclose(v, setting_lr)}


def rates_text(rates: Mapping[str, float], setting_lr: float) -> str:
    """Return which methods ran at a per-method rate and which at the setting's ("" if none)."""
    own = own_rates(rates, setting_lr)
    if not own:
        return ""
    same = sorted(a for a in rates if a not in own)
    listed = ", ".join(f"{a} {v:g}" for a, v in own.items())
    text = f"- **Rates.** {len(own)} methods ran at a per-method rate ({listed}); "
    text += f"{len(same)} at the setting's {setting_lr:g}"
    return text + (f" ({', '.join(same)}).\n" if same else ".\n")


def findings(
    family: Sequence[Row], runs: Sequence[Row], every: Sequence[Row], rates: str = ""
) -> str:
    """Return the "what this shows" bullets.

    The headline comes from ``family`` (per-method means) and its per-seed ``runs``, the rest
    from ``every``; ``rates`` is :func:`rates_text`.
    """
    bullets = [
        rates,
        headline(family, runs),
        aggregation(every),
        personalization(every),
        communication(every),
        lowest(every),
    ]
    body = "".join(b for b in bullets if b)
    return "What the numbers show (computed from the result files):\n\n" + body if body else ""
