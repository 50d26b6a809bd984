"""Render ``results/dp/`` (``ilora bench dp``) as a RESULTS.md section.

Reads ``dp.csv`` (one row per run: algorithm, where the noise goes, noise multiplier σ, clip
norm C, ε, final accuracy), ``norms.csv`` (the calibration update norms C was picked from),
``rounds.csv`` and ``meta.json`` only. σ = 0 is the run without DP; ε is the replace-one RDP
bound of our fixed-size sampling (``ilora.engine.privacy``) with the Poisson add/remove
approximation beside it.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report._plot import new_figure
from ilora.report._plot import save_with_legend
from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head


def _eps(x: str) -> str:
    value = float(x)
    if math.isinf(value):
        return "∞ (no DP)"
    return f"{value:.3g}" if value < 1000 else f"{value:.3g}".replace("e+0", "e").replace("e+", "e")


CENTRAL = "aggregate"  # dp.noise of central DP-FedAvg (the sum carries the noise once)


def _label(alg: str, noise: str) -> str:
    return f"{alg}, central noise" if noise == CENTRAL else alg


def _series(rows: Sequence[Mapping[str, str]]) -> dict[str, list[Mapping[str, str]]]:
    """Return ``label -> runs``: one series per algorithm and noise placement.

    Each series starts with the algorithm's run without DP (σ = 0), its reference.
    """
    out: dict[str, list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        if float(r["noise_multiplier"]) > 0:
            out[_label(r["algorithm"], r.get("noise", ""))].append(r)
    for r in rows:
        if float(r["noise_multiplier"]) == 0:
            for label in [k for k in out if k.split(",")[0] == r["algorithm"]] or [r["algorithm"]]:
                out[label].insert(0, r)
    return out


def _final(run: Mapping[str, str]) -> str:
    """Return the final accuracy cell: the percentage, or where the engine stopped the run."""
    if run.get("stopped"):
        return f"stopped: {run['stopped'].split(':')[0]}"
    return f"{100 * float(run['final_accuracy']):.2f}"


def _placement(run: Mapping[str, str]) -> str:
    if float(run["noise_multiplier"]) == 0:
        return "—"
    return "the sum (central)" if run.get("noise") == CENTRAL else "every upload"


def _table(rows: Sequence[Mapping[str, str]]) -> str:
    headers = [
        "algorithm",
        "noise on",
        "σ",
        "ε (δ, our sampling)",
        "ε (Poisson approx.)",
        "noise std per entry",
        "final accuracy %",
        "best accuracy %",
    ]
    body = [
        [
            r["algorithm"],
            _placement(r),
            f"{float(r['noise_multiplier']):g}",
            _eps(r["epsilon"]),
            _eps(r["epsilon_poisson"]),
            f"{float(r['noise_std_per_entry']):.3g}",
            _final(r),
            f"{100 * float(r['best_accuracy']):.2f}",
        ]
        for r in rows
    ]
    return md_table(headers, body).strip()


def _sentences(rows: Sequence[Mapping[str, str]], majority: float) -> list[str]:
    out = []
    for alg, runs in _series(rows).items():
        base = [r for r in runs if float(r["noise_multiplier"]) == 0]
        noisy = sorted(
            (r for r in runs if float(r["noise_multiplier"]) > 0),
            key=lambda r: float(r["noise_multiplier"]),
        )
        if not base or not noisy:
            continue
        ref = 100 * float(base[0]["final_accuracy"])
        parts = [
            f"σ = {float(r['noise_multiplier']):g} (ε = {_eps(r['epsilon'])}): "
            + (
                f"the engine stopped it in {r['stopped']}"
                if r.get("stopped")
                else f"{100 * float(r['final_accuracy']):.2f}% "
                f"({100 * float(r['final_accuracy']) - ref:+.2f})"
            )
            for r in noisy
        ]
        out.append(f"{alg}: {ref:.2f}% without DP; " + "; ".join(parts) + ".")
        floor = [r for r in noisy if 100 * float(r["final_accuracy"]) <= majority + 0.5]
        if not math.isnan(majority) and floor:
            sigmas = ", ".join(f"{float(r['noise_multiplier']):g}" for r in floor)
            out.append(
                f"At σ = {sigmas} {alg} ends within half a point of always guessing the majority "
                f"class ({majority:.2f}% of the test split) or below it."
            )
    return out


def _noise_sentence(rows: Sequence[Mapping[str, str]]) -> str:
    """Return how large the noise in a round's mean update is against the clipped signal.

    Noise on every upload: the mean of ``m`` uploads of ``n`` floats carries noise of norm
    ``σC·√(n/m)``; central noise: ``σC·√n/m``. The mean of clipped updates has norm at most C.
    """
    parts = []
    for label, runs in sorted(_series(rows).items()):
        noisy = [r for r in runs if float(r["noise_multiplier"]) > 0 and r.get("floats_per_upload")]
        if not noisy:
            continue
        n = statistics.fmean(float(r["floats_per_upload"]) for r in noisy)
        m = int(noisy[0]["sampled"])
        per_sigma = math.sqrt(n) / m if noisy[0].get("noise") == CENTRAL else math.sqrt(n / m)
        least = min(float(r["noise_multiplier"]) for r in noisy)
        parts.append(
            f"{label}: {n:,.0f} floats per upload and {m} uploads per round leave noise of norm "
            f"{per_sigma:.1f}σ·C in the round's mean update, {least * per_sigma:.1f}x the "
            f"largest signal it can carry (C) at the smallest σ = {least:g}"
        )
    if not parts:
        return ""
    return (
        "Noise against signal: "
        + "; ".join(parts)
        + ". Noise on every upload falls as 1/√m with the clients per round m, central noise "
        "as 1/m."
    )


def _clip_sentence(norms: Sequence[Mapping[str, str]], meta: Mapping[str, Any]) -> str:
    values = [float(r["norm"]) for r in norms]
    if not values:
        return ""
    algs = ", ".join(sorted({r["algorithm"] for r in norms}))
    rounds = max(int(r["round"]) for r in norms)
    clip = float(meta.get("clip_norm", statistics.median(values)))
    rule = meta.get("clip_rule", "")
    return (
        f"Clip norm C = {clip:.3g} ({rule}): the {len(values)} update norms ‖u − sent‖ of {algs} "
        f"in {rounds} rounds without DP range from {min(values):.3g} to {max(values):.3g} "
        f"(median {statistics.median(values):.3g})."
    )


def _figure(rows: Sequence[Mapping[str, str]], img: Path, majority: float) -> str:
    fig, ax = new_figure("Accuracy against the privacy budget", "ε at δ (log scale)", "accuracy %")
    for alg, runs in sorted(_series(rows).items()):
        pts = sorted(
            (float(r["epsilon"]), 100 * float(r["final_accuracy"]))
            for r in runs
            if not math.isinf(float(r["epsilon"])) and not r.get("stopped")
        )
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=alg)
        for r in runs:
            if math.isinf(float(r["epsilon"])):
                ax.axhline(
                    100 * float(r["final_accuracy"]),
                    linestyle="--",
                    color=line[0].get_color(),
                    label=f"{alg} without DP",
                )
    if not math.isnan(majority):
        ax.axhline(majority, linestyle=":", color="gray", label="majority class")
    ax.set_xscale("log")
    return save_with_legend(fig, ax, img, "dp-accuracy", "final accuracy against epsilon")


def render(src: Path, img: Path) -> str:
    """Return the differential privacy section (see the module docstring)."""
    meta = read_meta(src)
    rows = read_csv(src / "dp.csv")
    majority = 100 * float(meta.get("majority_class_accuracy", "nan"))
    first = rows[0] if rows else {}
    setting = (
        f"Setting: `{meta.get('config', '?')}` with {meta.get('weighting', 'not recorded')} "
        "aggregation weights, "
        f"{first.get('rounds', '?')} rounds, {first.get('sampled', '?')} of "
        f"{first.get('num_clients', '?')} clients per round, δ = {first.get('delta', '?')}. "
        "Every update is clipped to C. Noise on every upload: each upload carries Gaussian "
        "noise of std σ·C per entry (`dp.noise: upload`, which covers any aggregation, ILoRA's "
        "included). Central noise: σ·C/√m per upload, so that the sum of the m uploads carries "
        "σ·C, as in DP-FedAvg (`dp.noise: aggregate`, for a mean of one shape). ε composes the "
        "rounds with the replace-one RDP accountant of fixed-size sampling without replacement. "
        "Final accuracy is on the whole test split; best is over the per-round evaluations "
        "on the seeded subset."
    )
    parts = [
        *section_head("## Differential privacy: accuracy against ε", meta),
        setting,
        _clip_sentence(read_csv(src / "norms.csv"), meta),
        _table(rows),
        " ".join(_sentences(rows, majority)),
        _noise_sentence(rows),
        _figure(rows, img, majority),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
