"""The quality grid (``results/quality/``, written by ``ilora bench quality``).

Per task: a table of final accuracy (mean ± std over seeds, and each method's rank) for every
rank setting and Dirichlet alpha, with the centralized line; the same for personalized
accuracy; plots of accuracy per round, accuracy against bytes communicated and aggregation
error per round in the headline setting; the ILoRA-S target check; and what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report import _grid as grid
from ilora.report import _quality_text as text
from ilora.report._plot import line_chart
from ilora.report._plot import round_means
from ilora.report._plot import save_png
from ilora.report._setting import describe
from ilora.report._table import CENTRAL
from ilora.report._table import command_block
from ilora.report._table import md_table
from ilora.report._table import meta_line
from ilora.report._table import read_csv
from ilora.report._table import read_meta

SHORT = {"heterogeneous": "het", "homogeneous": "hom"}


def _columns(meta: Mapping[str, Any], task: str) -> list[grid.Setting]:
    alphas = sorted(float(a) for a in meta["alphas"])
    return [(task, r, a) for r in meta["ranks"] for a in alphas]


def _header(setting: grid.Setting) -> str:
    return f"{SHORT.get(setting[1], setting[1])} α={setting[2]:g}"


def _cell(stat: grid.Stat | None, rank: int | None, seeds: int) -> str:
    if stat is None or math.isnan(stat.mean):
        return "–"
    out = f"{stat.mean:.1f} ± {stat.std:.1f}"
    out += f" ({rank})" if rank is not None else ""
    return out + (f" [{stat.n} seed{'s' * (stat.n != 1)}]" if stat.n < seeds else "")


def _complete(meta: Mapping[str, Any], cell: Mapping[str, grid.Stat]) -> bool:
    """Return True if every method of the grid has every seed in this setting."""
    seeds = len(meta["seeds"])
    return all(a in cell and cell[a].n == seeds for a in meta["algorithms"])


def table(
    meta: Mapping[str, Any],
    task: str,
    cells: Mapping[grid.Setting, Mapping[str, grid.Stat]],
    ranked: bool,
) -> str:
    """Return one task's table: a row per method, a column per setting, mean rank last.

    Ranks are given only in settings where every method has every seed (a partial setting
    would rank methods on different seeds); the mean rank is over those settings.
    """
    cols = _columns(meta, task)
    seeds = len(meta["seeds"])
    complete = [s for s in cols if _complete(meta, cells.get(s, {}))]
    ranks = {s: grid.ranks_in(cells[s]) if s in complete else {} for s in cols}
    algs = [*meta["algorithms"], CENTRAL]
    mean_rank = {
        a: sum(ranks[s][a] for s in cols if a in ranks[s]) / n
        for a in algs
        if (n := sum(a in ranks[s] for s in cols))
    }
    order = sorted(algs, key=lambda a: (a == CENTRAL, mean_rank.get(a, math.inf), a))
    body = []
    for alg in order:
        row = [
            _cell(cells.get(s, {}).get(alg), ranks[s].get(alg) if ranked else None, seeds)
            for s in cols
        ]
        avg = f"{mean_rank[alg]:.1f}" if alg in mean_rank and ranked else ""
        body.append([alg, *row, *([avg] if ranked else [])])
    headers = ["method", *map(_header, cols), *([f"mean rank ({len(complete)})"] if ranked else [])]
    return md_table(headers, body)


def plots(
    meta: Mapping[str, Any], rounds: Sequence[Mapping[str, str]], task: str, img: Path
) -> str:
    """Return the links to the headline setting's four figures for ``task``."""
    setting = text.headline_setting(meta, task)
    runs = grid.runs_per_round(rounds, setting)
    if not runs:
        return ""
    where = f"{task}, {setting[1]} ranks, α={setting[2]:g}, seed mean"
    acc = round_means(runs, "accuracy", 100.0)
    mb = round_means(runs, "mb")
    by_bytes = {
        a: (mb[a][1], acc[a][1]) for a in acc if a in mb and len(mb[a][1]) == len(acc[a][1])
    }
    err = {a: v for a, v in round_means(runs, "agg_error").items() if a != CENTRAL}
    down = {a: v for a, v in round_means(runs, "download_error").items() if a != CENTRAL}
    figures = [
        (line_chart(acc, f"Global test accuracy per round ({where})", "round", "accuracy %"),
         "accuracy", "accuracy per round"),
        (line_chart(by_bytes, f"Accuracy vs bytes communicated ({where})",
                    "MB sent and received, cumulative (log)", "accuracy %", logx=True),
         "accuracy-vs-bytes", "accuracy against cumulative MB"),
        (line_chart(err, f"Aggregation error per round ({where})", "round",
                    "‖ΔW* − ΔW‖/‖ΔW*‖ (symlog)", logy=True),
         "agg-error", "aggregation error per round"),
    ]  # fmt: skip
    if down:  # result files made before download_error existed have none
        figures.append((line_chart(down, f"Download error per round ({where})", "round",
                                   "mean_k ‖W_k − W_g‖/‖W_g‖ (symlog)", logy=True),
                        "download-error", "download error per round"))  # fmt: skip
    links = [
        save_png(fig, img, f"quality-{task}-{name}", f"{task}: {alt}") for fig, name, alt in figures
    ]
    return "\n".join(links) + "\n"


def _task_section(
    meta: Mapping[str, Any],
    rows: Sequence[Mapping[str, str]],
    rounds: Sequence[Mapping[str, str]],
    task: str,
    img: Path,
) -> str:
    alphas = [float(a) for a in meta["alphas"]]
    task_rows = [r for r in rows if r["task"] == task]
    if not task_rows:
        return f"### {task}\n\nNo finished runs yet.\n"
    final = grid.stats(task_rows, "final_accuracy", alphas)
    personal = grid.stats(task_rows, "personal_accuracy")
    vary = text.vary_text(meta)
    return (
        f"### {task}\n\nSetting (preset `{meta.get('presets', {}).get(task, '')}`): "
        f"{describe(meta['settings'][task], vary=vary)}\n\n"
        "Final accuracy % of the global model (mean ± std over seeds; in parentheses the "
        "method's rank among the federated methods, in settings where every method has every "
        "seed; the last column averages those ranks over that many settings; the centralized "
        "line trains on the pooled data, so its runs stand for every α of a rank setting):\n\n"
        + table(meta, task, final, ranked=True)
        + "\n"
        + text.task_summary(meta, task, final)
        + "\nPersonalized accuracy % (every client's own model on its own test share; the "
        "centralized line only at the α it ran at):\n\n"
        + table(meta, task, personal, ranked=False)
        + "\n"
        + plots(meta, rounds, task, img)
    )


def render(src: Path, img: Path) -> str:
    """Return the quality section; write ``quality-<task>-*.png`` into ``img``."""
    meta = read_meta(src)
    rows = read_csv(src / "runs.csv") if (src / "runs.csv").is_file() else []
    rounds = read_csv(src / "rounds.csv") if (src / "rounds.csv").is_file() else []
    parts = [
        "## Quality grid: every method, rank settings x Dirichlet α x seeds\n",
        meta_line(meta) + "\n",
        command_block(str(meta.get("command", ""))),
        *(f"{note}\n" for note in meta.get("notes", [])),
        text.coverage(meta, rows),
        text.target_check(meta, rows),
        *(_task_section(meta, rows, rounds, task, img) for task in meta["tasks"]),
        text.timing(meta, rows),
    ]
    return "\n".join(p for p in parts if p)
