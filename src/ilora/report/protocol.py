"""Render ``results/protocol/`` (``ilora bench protocol``): tuned rates, horizon, comparison.

Reads ``tune.csv``, ``horizon.csv``, ``runs.csv``, ``rounds.csv`` and ``meta.json`` only. Every
mean carries its 95% interval over seeds and every comparison is a paired difference with the
verdict of :mod:`ilora.report.stats` (one rule for the whole report). The claims of the ILoRA
paper are checked in :mod:`ilora.report._claims`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report import _claims
from ilora.report import _protocol_time
from ilora.report import _score_window
from ilora.report import _second_family
from ilora.report import _settling
from ilora.report import stats
from ilora.report._plot import line_chart
from ilora.report._plot import save_png
from ilora.report._settling import Key
from ilora.report._table import BASELINE
from ilora.report._table import CENTRAL
from ilora.report._table import command_block
from ilora.report._table import md_table
from ilora.report._table import meta_line
from ilora.report._table import missing_seeds
from ilora.report._table import num
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import seeds_words
from ilora.report._table import setting_seeds

Row = Mapping[str, str]
Cell = dict[str, dict[int, float]]  # variant -> seed -> final accuracy (%)


def cells(runs: Sequence[Row], key: str = "final_accuracy") -> dict[tuple[str, str, float], Cell]:
    """Return ``{(task, ranks, alpha): {variant: {seed: value %}}}``; centralized in every alpha."""
    alphas: dict[tuple[str, str], set[float]] = defaultdict(set)
    for r in runs:
        alphas[(r["task"], r["ranks"])].add(float(r["alpha"]))
    out: dict[tuple[str, str, float], Cell] = defaultdict(lambda: defaultdict(dict))
    for r in runs:
        value = 100 * num(r.get(key))
        where = alphas[(r["task"], r["ranks"])] if r["variant"] == CENTRAL else {float(r["alpha"])}
        for alpha in where:
            out[(r["task"], r["ranks"], alpha)][r["variant"]][int(r["seed"])] = value
    return out


def _tuned_row(r: Row, rows: Sequence[Row]) -> list[Any]:
    """Return the tuned-rate table's row of the chosen run ``r`` among its variant's ``rows``."""
    tried = [float(o["lr"]) for o in rows]
    finished = sum(o.get("finished", "1") == "1" for o in rows)  # older files: all finished
    runs = f"{finished}" if finished == len(rows) else f"{finished} of {len(rows)}, unfinished"
    return [
        r["variant"],
        f"{float(r['lr']):.3g}",
        f"{num(r['val_score']):.2f}",
        "own models" if r.get("metric") == _second_family.PERSONAL_METRIC else "global model",
        f"{min(tried):.3g} … {max(tried):.3g}",
        runs,
        "yes" if float(r["lr"]) in (min(tried), max(tried)) else "no",
    ]


def _tuning(tune: Sequence[Row], img: Path) -> str:
    by_task: dict[str, list[Row]] = defaultdict(list)
    for r in tune:
        by_task[r["task"]].append(r)
    headers = ["method", "tuned lr", "validation accuracy %", "of", "rates tried", "runs"]
    parts = []
    for task, rows in sorted(by_task.items()):
        chosen = sorted((r for r in rows if r["chosen"] == "1"), key=lambda r: r["variant"])
        body = [_tuned_row(r, [o for o in rows if o["variant"] == r["variant"]]) for r in chosen]
        parts.append(f"**{task}**\n\n{md_table([*headers, 'at edge'], body)}")
        second = [r for r in rows if _second_family.in_second_family(r["variant"])]
        first = [r for r in rows if r not in second]
        if first:
            figure = _rate_plot(task, first, "")
            parts.append(save_png(figure, img, f"protocol-lr-{task}", f"{task} rates"))
        if second:
            figure = _rate_plot(task, second, ", second family")
            name, alt = f"protocol-lr-{task}-second-family", f"{task} rates, second family"
            parts.append(save_png(figure, img, name, alt))
    return "\n\n".join(parts)


def _rate_plot(task: str, rows: Sequence[Row], which: str) -> Any:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        points = sorted((float(r["lr"]), num(r["val_score"])) for r in mine)
        own = any(r.get("metric") == _second_family.PERSONAL_METRIC for r in mine)
        series[f"{variant} (own models)" if own else variant] = (
            [x for x, _ in points],
            [y for _, y in points],
        )
    title = f"{task}{which}: validation accuracy by learning rate (tuning seed)"
    return line_chart(series, title, "learning rate", "validation accuracy %", logx=True)


def _horizon(rows: Sequence[Row]) -> str:
    body = [
        [
            r["task"],
            r["variant"],
            f"{float(r['lr']):.3g}",
            r["rounds_run"],
            r["plateau_round"] or "not reached",
            r["horizon"],
        ]
        for r in rows
    ]
    headers = ["task", "run", "lr", "rounds run", "plateau round", "comparison horizon"]
    return md_table(headers, body)


def comparison_table(cell: Cell, personal: Cell) -> str:
    """Return one row per variant: mean ± 95% CI and paired differences vs FedIT and the best."""
    means = {v: stats.mean_ci(s.values()) for v, s in cell.items()}
    fed = [v for v in means if v != CENTRAL and not math.isnan(means[v].mean)]
    none = sorted(v for v in means if v != CENTRAL and v not in fed)  # no finite result: n/a
    order = sorted(fed, key=lambda v: -means[v].mean) + none + [v for v in means if v == CENTRAL]
    body = []
    for v in order:
        best = max((o for o in fed if o != v), key=lambda o: means[o].mean, default=None)
        vs_base = stats.paired(cell[v], cell.get(BASELINE, {})) if v != BASELINE else None
        vs_best = stats.paired(cell[v], cell[best]) if best and v != CENTRAL else None
        pers = stats.mean_ci(personal.get(v, {}).values())
        body.append(
            [
                v,
                means[v].text(),
                pers.text() if pers.n else "-",
                stats.marked(vs_base),
                f"{best}: {stats.marked(vs_best)}" if vs_best is not None else "-",
            ]
        )
    headers = ["method", "test accuracy % (95% CI)", "personalized %", "− fedit", "− best other"]
    return md_table(headers, body)


def render(src: Path, img: Path) -> str:
    """Return the protocol section; write ``protocol-*.png`` into ``img``."""
    meta = read_meta(src)
    tune = read_csv(src / "tune.csv") if (src / "tune.csv").is_file() else []
    horizon = read_csv(src / "horizon.csv") if (src / "horizon.csv").is_file() else []
    runs = read_csv(src / "runs.csv") if (src / "runs.csv").is_file() else []
    commands = [c for phase in meta.get("commands", {}).values() for c in phase]
    walls = meta.get("wall_s_by_phase", {})
    parts = [
        "## The comparison protocol: tuned on validation, compared over seeds\n",
        meta_line(meta) + "\n",
        command_block(*commands),
        "Machine time: "
        + ", ".join(f"{p} {w / 3600:.2f} h" for p, w in sorted(walls.items()))
        + " (wall time of the invocations that ran to their end); the finished runs' own time, "
        + "one worker each: "
        + ", ".join(
            f"{p} {w / 3600:.2f} h" for p, w in sorted(meta.get("run_seconds_by_phase", {}).items())
        )
        + ".\n",
        _protocol_time.render(meta),
        _rules(meta),
    ]
    window = int(meta.get("rules", {}).get("score_window", 0))
    if tune:
        parts += ["### Learning rates chosen on validation\n", _tuning(tune, img) + "\n"]
        parts.append(_score_window.render(tune, window))
    if horizon:
        parts += ["### Horizon\n", _horizon(horizon) + "\n"]
    if runs:
        rounds = read_csv(src / "rounds.csv") if (src / "rounds.csv").is_file() else []
        personalized = {r["variant"] for r in tune if r.get("metric") == "personal_accuracy"}
        parts += _comparison(runs, _settling.swings(rounds, window, personalized), window)
    parts.append(_second_family.render(cells(runs), cells(runs, "personal_accuracy"), tune))
    if runs:
        parts.append(_claims.render(cells(runs)))
    return "\n".join(p for p in parts if p)


def _rules(meta: Mapping[str, Any]) -> str:
    rules = meta.get("rules", {})
    if not rules:
        return ""
    # results written before the tuning setting was recorded were all tuned at the default
    tuned_at = meta.get("tuning", {"ranks": "heterogeneous", "alpha": 0.1})
    return (
        f"Rules: each method's rate is the best validation accuracy (mean of the last "
        f"{rules['score_window']} evaluations; for a personalized method, its clients' own "
        "models on validation shares drawn with each client's label mix) on a log grid of "
        f"ratio √10, extended up to "
        f"{rules['max_extensions']} steps past an edge while the best sits there, at tuning "
        f"seed {meta.get('tune_seed')} in one tuning setting ({tuned_at['ranks']} ranks, "
        f"α = {tuned_at['alpha']:g}) for every compared setting; the horizon, found in the same "
        "setting, is the round where neither the centralized "
        f"line nor the best federated method has gained {rules['plateau_tol_points']} points "
        f"over its best within the last {rules['plateau_window']} evaluations (at most "
        f"{rules['max_rounds']} rounds). Differences are paired by seed (same partition, "
        "initialisation and sampling) with 95% Student-t intervals; ▲/▼ mark an interval "
        "that excludes 0.\n"
    )


def _comparison(
    runs: Sequence[Row], swing: Mapping[Key, Mapping[str, float]], window: int
) -> list[str]:
    finals, personal = cells(runs), cells(runs, "personal_accuracy")
    parts = ["### Comparison on test\n"]
    for key in sorted(finals):
        task, ranks, alpha = key
        seeds = setting_seeds(finals[key], CENTRAL)
        parts.append(
            f"**{task}, {ranks} ranks, Dirichlet α={alpha:g}** ({seeds_words(len(seeds))})\n\n"
            + comparison_table(finals[key], personal.get(key, {}))
            + "\n"
        )
        notes = [missing_seeds(finals[key], seeds), rounds_note(runs, key)]
        notes.append(_settling.note(swing.get(key, {}), window))
        parts += [note + "\n" for note in notes if note]
    return parts


def rounds_note(runs: Sequence[Row], key: tuple[str, str, float]) -> str:
    """Return which federated runs of setting ``key`` ran how many rounds, if they differ.

    Every run of a setting runs the task's horizon; a run stopped early, or methods compared
    by an invocation whose horizon came out otherwise, would be compared over other rounds.
    """
    by_rounds: dict[str, set[str]] = defaultdict(set)
    for r in runs:
        where = (r["task"], r["ranks"], float(r["alpha"]))
        if where == key and r["variant"] != CENTRAL and r.get("rounds"):
            by_rounds[r["rounds"]].add(r["variant"])
    if len(by_rounds) < 2:
        return ""
    groups = sorted(by_rounds.items(), key=lambda kv: -len(kv[1]))
    words = "; ".join(f"{n}: {', '.join(sorted(vs))}" for n, vs in groups)
    return f"Rounds run differ within this setting (rounds: methods): {words}."
