"""Render ``results/faults/`` (``benchmarks/faults.py``) as a RESULTS.md section.

Reads ``faults.csv`` (one row per run: algorithm, variant ``clean | faulty | lost``, final
accuracy, accepted / failed / rejected updates, the guards), ``accounting.csv`` (per run and
fault kind: injected vs counted as failed, rejected or accepted), ``rounds.csv`` (accuracy per
round) and ``meta.json`` only. Target of issue 7: the faulty run completes, every bad update is
rejected and counted, and its final accuracy is within 1 point of the clean run.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ilora.report._plot import line_chart, save_png
from ilora.report._table import command_block, md_table, meta_line, read_csv, read_meta

TARGET_POINTS = 1.0
TAIL = 5  # rounds in the tail mean: the final accuracy of one run moves by points round to round
NAN = float("nan")
BYZANTINE = ("sign_flip", "scale")
VARIANTS = {
    "clean": "clean",
    "faulty": "faults + checks + clipping",
    "lost": "control: every faulty update lost",
}


def _pct(x: str | float) -> float:
    return 100 * float(x)


def _guard(row: Mapping[str, str]) -> str:
    if row["variant"] != "faulty":
        return "-"
    parts = [f"clip {float(row['clip_update_norm']):g}", f"max {float(row['max_update_norm']):g}"]
    if row["robust"] != "none":
        parts.append(f"{row['robust']} β={float(row['trim_fraction']):g}".replace(" β=nan", ""))
    return ", ".join(parts)


def _runs_table(rows: Sequence[Mapping[str, str]]) -> str:
    headers = [
        "algorithm",
        "run",
        "final accuracy %",
        "best accuracy %",
        "accepted",
        "failed (lost)",
        "rejected",
        "sampled",
        "rounds without an accepted update",
        "server guards",
    ]
    body = [
        [
            r["algorithm"],
            VARIANTS.get(r["variant"], r["variant"]),
            f"{_pct(r['final_accuracy']):.2f}",
            f"{_pct(r['best_accuracy']):.2f}",
            r["accepted"],
            r["failed"],
            r["rejected"],
            r["sampled"],
            r.get("empty_rounds", "n/a"),
            _guard(r),
        ]
        for r in rows
    ]
    return md_table(headers, body).strip()


def _tail_means(rounds: Sequence[Mapping[str, str]], last: int) -> dict[tuple[str, str], float]:
    """Return the mean accuracy (%) over each run's last ``last`` evaluated rounds."""
    curves: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in rounds:
        curves[(r["algorithm"], r["variant"])].append((int(r["round"]), _pct(r["accuracy"])))
    return {
        key: sum(acc for _, acc in sorted(pts)[-last:]) / len(sorted(pts)[-last:])
        for key, pts in curves.items()
    }


def _verdicts(
    rows: Sequence[Mapping[str, str]], tails: Mapping[tuple[str, str], float]
) -> list[str]:
    """Return the sentences comparing each algorithm's faulty (and control) run with clean."""
    by_alg: dict[str, dict[str, Mapping[str, str]]] = defaultdict(dict)
    for r in rows:
        by_alg[r["algorithm"]][r["variant"]] = r
    out = []
    for alg, runs in by_alg.items():
        if "clean" not in runs or "faulty" not in runs:
            continue
        clean = _pct(runs["clean"]["final_accuracy"])
        faulty = _pct(runs["faulty"]["final_accuracy"])
        gap = faulty - clean
        within = "within" if abs(gap) <= TARGET_POINTS else "not within"
        tail_gap = tails.get((alg, "faulty"), NAN) - tails.get((alg, "clean"), NAN)
        out.append(
            f"{alg}: the faulty run completed all {runs['faulty']['rounds']} rounds with "
            f"{runs['faulty']['accepted']} of {runs['faulty']['sampled']} sampled updates "
            f"accepted and reached {faulty:.2f}% against {clean:.2f}% clean ({gap:+.2f} points, "
            f"{within} the {TARGET_POINTS:g}-point target; {tail_gap:+.2f} points over the mean "
            f"of the last {TAIL} evaluated rounds)."
        )
        empty = int(runs["faulty"].get("empty_rounds") or 0)
        if empty:
            out.append(
                f"In {empty} of its rounds every sampled client failed; the server kept its "
                "model (`fed.min_success: 0`; with 1 the run stops there with exit code 3)."
            )
        if "lost" in runs:
            lost = _pct(runs["lost"]["final_accuracy"])
            out.append(
                f"The control that simply loses every faulty client's update (the same clients, "
                f"{runs['lost']['accepted']} accepted updates) reaches {lost:.2f}% "
                f"({lost - clean:+.2f} points from clean): that much comes from the lost data "
                f"alone; keeping the clipped Byzantine updates{_robust_words(runs['faulty'])} "
                f"moves the faulty run {faulty - lost:+.2f} points from the control."
            )
    return out


def _robust_words(row: Mapping[str, str]) -> str:
    return "" if row["robust"] == "none" else f" under the {row['robust'].replace('_', ' ')}"


def _accounting(rows: Sequence[Mapping[str, str]]) -> tuple[str, list[str]]:
    """Return the accounting table of the faulty runs and its sentences."""
    faulty = [r for r in rows if r["variant"] == "faulty"]
    headers = ["algorithm", "fault", "injected", "failed (lost)", "rejected", "accepted"]
    body = [
        [r["algorithm"], r["fault"], r["injected"], r["failed"], r["rejected"], r["accepted"]]
        for r in faulty
    ]
    sentences = []
    for alg in sorted({r["algorithm"] for r in faulty}):
        mine = [r for r in faulty if r["algorithm"] == alg]
        bad = [r for r in mine if r["fault"] not in BYZANTINE]
        injected = sum(int(r["injected"]) for r in bad)
        counted = sum(int(r["failed"]) + int(r["rejected"]) for r in bad)
        slipped = sum(int(r["accepted"]) for r in bad)
        byz = [r for r in mine if r["fault"] in BYZANTINE]
        byz_in = sum(int(r["injected"]) for r in byz)
        byz_ok = sum(int(r["accepted"]) for r in byz)
        verdict = "every one" if counted == injected and slipped == 0 else f"{slipped} NOT"
        sentences.append(
            f"{alg}: {injected} lost or corrupt updates were injected and {counted} are counted "
            f"in history.jsonl as failed or rejected ({verdict} accounted for); of the "
            f"{byz_in} Byzantine updates (sign-flipped or scaled), which pass the checks by "
            f"design, {byz_ok} were accepted and met the clipping (a sign flip keeps its honest "
            "norm; only a scaled update is shortened)."
        )
    return md_table(headers, body).strip(), sentences


def _norms(norms: Sequence[Mapping[str, str]], rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Return, per faulty run, how the clip threshold sits among the honest update norms."""
    out = []
    for r in rows:
        if r["variant"] != "faulty" or float(r["clip_update_norm"]) <= 0:
            continue
        values = sorted(
            float(n["norm"])
            for n in norms
            if n["algorithm"] == r["algorithm"] and n["variant"] == "faulty"
        )
        if not values:
            continue
        clip = float(r["clip_update_norm"])
        above = sum(v > clip for v in values)
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        effect = (
            "leaves every honest update alone"
            if above == 0
            else "also shortens those honest updates"
        )
        out.append(
            f"{r['algorithm']}: the {len(values)} updates its clients produced (before any fault "
            f"or clipping) have norms ‖u − sent‖ from {values[0]:.3g} to {values[-1]:.3g} "
            f"(median {statistics.median(values):.3g}, 95th percentile {p95:.3g}); {above} "
            f"exceed the clip threshold {clip:g}, so clipping {effect} and "
            f"bounds a scaled (x10) one to {clip:g}."
        )
    return out


def _figure(rows: Sequence[Mapping[str, str]], img: Path) -> str:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        label = f"{r['algorithm']} {r['variant']}"
        xs, ys = series.setdefault(label, ([], []))
        xs.append(float(r["round"]))
        ys.append(_pct(r["accuracy"]))
    fig = line_chart(series, "Global test accuracy under faults", "round", "accuracy %")
    return save_png(fig, img, "faults-accuracy", "accuracy per round, clean vs faulty")


def _setting(meta: Mapping[str, Any]) -> str:
    mix = meta.get("mix", {})
    shares = ", ".join(f"{k} {100 * float(v):g}%" for k, v in sorted(mix.items()))
    return (
        f"Setting: `{meta.get('config', '?')}`, {meta.get('rounds', '?')} rounds. Faults per "
        f"sampled client and round (seeded): {shares}; a scaled update is multiplied by "
        f"{meta.get('byzantine_scale', '?')}. The control run loses the updates of exactly the "
        "clients the mix hits (the same seeded draws), so it isolates the lost data. Final "
        "accuracy is on the whole test split; best is over the per-round evaluations on the "
        "seeded subset."
    )


def render(src: Path, img: Path) -> str:
    """Return the fault campaign section (see the module docstring)."""
    meta = read_meta(src)
    rows = read_csv(src / "faults.csv")
    rounds = read_csv(src / "rounds.csv")
    table, accounted = _accounting(read_csv(src / "accounting.csv"))
    parts = [
        "## Fault campaign: dropouts, corrupt and Byzantine updates",
        command_block(str(meta.get("command", ""))).strip(),
        meta_line(meta),
        _setting(meta),
        _runs_table(rows),
        " ".join(_verdicts(rows, _tail_means(rounds, TAIL))),
        "### Every injected fault, counted",
        table,
        " ".join(accounted),
        " ".join(
            _norms(read_csv(src / "norms.csv"), rows) if (src / "norms.csv").is_file() else []
        ),
        _figure(rounds, img),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
