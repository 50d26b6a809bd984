"""The sentences of the quality section, each computed from ``runs.csv`` and ``meta.json``."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from ilora.report import _grid as grid
from ilora.report import stats
from ilora.report._table import CENTRAL
from ilora.report._table import num

FOCUS, PLAIN = "ilora-s", "ilora"
TARGET = ("healthnews", "heterogeneous", 0.3)  # issue 6: ILoRA-S >= every baseline here


def headline_setting(meta: Mapping[str, Any], task: str) -> grid.Setting:
    """Return ``task``'s headline setting: heterogeneous ranks at α 0.3 where the grid has them."""
    ranks = TARGET[1] if TARGET[1] in meta["ranks"] else meta["ranks"][0]
    alphas = [float(a) for a in meta["alphas"]]
    alpha = TARGET[2] if TARGET[2] in alphas else float(meta["centralized_alpha"][task])
    return task, ranks, alpha


def vary_text(meta: Mapping[str, Any]) -> str:
    """Return what the grid varies on top of the preset, from ``meta.json``."""
    ranks = "; ".join(f"{name}: {', '.join(sets)}" for name, sets in meta["ranks"].items())
    alphas = ", ".join(f"{float(a):g}" for a in sorted(meta["alphas"]))
    seeds = ", ".join(str(s) for s in meta["seeds"])
    extra = meta.get("extra_overrides") or []
    more = f" Every run also sets {', '.join(extra)}." if extra else ""
    return (
        f"The grid varies the clients' ranks ({ranks}), the Dirichlet α over {alphas} (smaller "
        f"is more skewed) and the seed over {seeds} (partition, initialization, sampling).{more}"
    )


def coverage(meta: Mapping[str, Any], rows: Sequence[Mapping[str, str]]) -> str:
    """Return how many runs finished and, if any are missing, exactly which settings lack them."""
    expected = sum(sum(c.values()) for c in grid.expected(meta).values())
    gaps = grid.missing(meta, rows)
    text = f"{len(rows)} of the grid's {expected} runs have finished."
    if not gaps:
        return text + "\n"
    by_task: dict[str, list[tuple[grid.Setting, int, int]]] = defaultdict(list)
    for gap in gaps:
        by_task[gap[0][0]].append(gap)
    items = []
    for task, task_gaps in by_task.items():
        if all(done == 0 for _, done, _ in task_gaps) and len(task_gaps) == len(
            [s for s in grid.expected(meta) if s[0] == task]
        ):
            items.append(f"{task}: none of its {sum(w for _, _, w in task_gaps)} runs")
            continue
        items += [
            f"{task} {ranks} α={alpha:g}: {done} of {want} runs"
            for (task, ranks, alpha), done, want in task_gaps
        ]
    return (
        f"**Partial results.** {text} Missing (not run yet): {'; '.join(items)}. Tables and "
        "plots below show only the finished runs; a cell marked `[n seeds]` averages fewer "
        "seeds than the grid's. The same command continues the grid (finished runs are "
        "skipped).\n"
    )


def _fmt_gap(name: str, mean: float, ref: float) -> str:
    return f"{name} {mean:.2f}% ({mean - ref:+.2f})"


def _means_verdict(focus: grid.Stat, others: Mapping[str, grid.Stat]) -> str:
    """Return **Yes.**/**No.**: is ``focus``'s mean at or above every other mean, with numbers."""
    order = sorted(others.items(), key=lambda x: -x[1].mean)
    above = [(a, s) for a, s in order if s.mean > focus.mean]
    below = [(a, s) for a, s in order if s.mean <= focus.mean]
    head = f"{FOCUS} averages {focus.mean:.2f}% ± {focus.std:.2f} over {focus.n} seed(s)"
    if above:
        listed = ", ".join(_fmt_gap(a, s.mean, focus.mean) for a, s in above)
        verdict = (
            f"**No.** {head}; {len(above)} of the {len(others)} other federated methods have a "
            f"higher mean: {listed}."
        )
    else:
        verdict = f"**Yes.** {head}, at or above all {len(others)} other federated methods."
    if below:
        name, stat = below[0]
        verdict += (
            f" The closest at or below it is {name} ({stat.mean:.2f}%, "
            f"{focus.mean - stat.mean:.2f} points lower)."
        )
    return verdict


def target_check(meta: Mapping[str, Any], rows: Sequence[Mapping[str, str]]) -> str:
    """Return whether ILoRA-S's mean is >= every baseline in the target setting, with numbers.

    The headline compares seed means (the target's wording); the paired difference to the
    strongest rival follows with the verdict of :mod:`stats`.
    """
    task = TARGET[0] if TARGET[0] in meta["tasks"] else meta["tasks"][0]
    setting = headline_setting(meta, task)
    label = f"{task}, {setting[1]} ranks, Dirichlet α={setting[2]:g}"
    cell = grid.stats(rows, "final_accuracy").get(setting, {})
    title = f"**Target check ({label}): is {FOCUS}'s mean final accuracy ≥ every baseline?**"
    focus = cell.get(FOCUS)
    if focus is None:
        return f"{title} Cannot be checked yet: no finished {FOCUS} run in this setting.\n"
    others = {a: s for a, s in cell.items() if a not in (FOCUS, CENTRAL)}
    verdict = _means_verdict(focus, others)
    plain = cell.get(PLAIN)
    if plain is not None:
        verdict += f" Plain {PLAIN}: {plain.mean:.2f}% ± {plain.std:.2f}."
    rival = max(others.items(), key=lambda x: x[1].mean, default=None)
    spread = (
        " " + stats.compare_sentence(FOCUS, rival[0], stats.paired(focus.by_seed, rival[1].by_seed))
        if rival is not None
        else ""
    )
    seeds = len(meta["seeds"])
    partial = [a for a, s in cell.items() if s.n < seeds]
    missing = [a for a in meta["algorithms"] if a not in cell]
    caveat = ""
    if partial or missing:
        caveat = (
            f" (Partial: {len(partial)} method(s) with fewer than {seeds} seeds, "
            f"{len(missing)} without any finished run here.)"
        )
    return (
        f"{title} {verdict}{spread}{caveat} We report this as measured; the preset is not "
        "tuned for any method.\n"
    )


def timing(meta: Mapping[str, Any], rows: Sequence[Mapping[str, str]]) -> str:
    """Return the measured run times per task and the grid's total."""
    if not rows:
        return ""
    by_task: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(num(row["wall_s"]))
    parts = [
        f"{task}: mean {statistics.fmean(xs):.1f} s per run (median "
        f"{statistics.median(xs):.1f}, min {min(xs):.1f}, max {max(xs):.1f}; {len(xs)} runs)"
        for task, xs in by_task.items()
    ]
    total = sum(x for xs in by_task.values() for x in xs)
    workers = meta.get("workers", 1)
    return (
        "### Run times\n\n"
        f"Wall time per run as the engine measured it (training and evaluation; one torch "
        f"thread per run, {workers} run(s) at a time): {'; '.join(parts)}. Together "
        f"{total / 3600:.2f} hours of run time, {total / 3600 / max(1, workers):.2f} hours of "
        f"wall time at {workers} run(s) at a time.{_invocation(meta, len(rows))}\n"
    )


def _invocation(meta: Mapping[str, Any], runs: int) -> str:
    """Return the wall time of the invocation that wrote the files, and the machine's load."""
    out = ""
    wall = meta.get("invocation_wall_s")
    if isinstance(wall, (int, float)):
        ran = meta.get("runs_run")
        which = f" to run {ran} of the {runs} runs" if isinstance(ran, int) else ""
        out += f" The invocation that wrote these files took {wall / 60:.1f} min{which}."
    load, workers = meta.get("load_average"), meta.get("workers", 1)
    if isinstance(load, float):
        busy = load > workers + 0.5
        out += (
            f" The 1-minute load average at the end was {load:.1f} on {meta.get('cpus')} CPUs "
            f"with {workers} run(s) at a time"
            + (": other jobs shared the machine, so these times are inflated." if busy else ".")
        )
    return out


def task_summary(
    meta: Mapping[str, Any], task: str, cells: Mapping[grid.Setting, Mapping[str, grid.Stat]]
) -> str:
    """Return the best mean rank over the complete settings and the gap to the centralized line."""
    seeds = len(meta["seeds"])
    complete = [
        s
        for s, cell in cells.items()
        if s[0] == task and all(a in cell and cell[a].n == seeds for a in meta["algorithms"])
    ]
    if not complete:
        return ""
    ranks: dict[str, list[int]] = defaultdict(list)
    gaps = []
    for s in complete:
        for alg, r in grid.ranks_in(cells[s]).items():
            ranks[alg].append(r)
        central = cells[s].get(CENTRAL)
        best = max(st.mean for a, st in cells[s].items() if a != CENTRAL)
        if central is not None:
            gaps.append(central.mean - best)
    mean_rank = {a: statistics.fmean(r) for a, r in ranks.items()}
    order = sorted(mean_rank, key=lambda a: mean_rank[a])
    text = (
        f"Over the {len(complete)} settings where every method has every seed, the best mean "
        f"rank is {order[0]}'s ({mean_rank[order[0]]:.1f}), then {order[1]} "
        f"({mean_rank[order[1]]:.1f}) and {order[2]} ({mean_rank[order[2]]:.1f})"
    )
    if FOCUS in mean_rank and FOCUS not in order[:3]:
        text += f"; {FOCUS}'s is {mean_rank[FOCUS]:.1f}"
    if gaps:
        text += (
            f". The centralized line is {min(gaps):.1f} to {max(gaps):.1f} points above the best "
            "federated mean of each setting"
            if min(gaps) > 0
            else f". In {sum(g <= 0 for g in gaps)} setting(s) a federated mean reaches the "
            "centralized line"
        )
    return text + ".\n"
