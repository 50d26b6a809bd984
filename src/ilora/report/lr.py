"""Render ``results/lr/`` (``ilora bench lr``) as a RESULTS.md section.

Reads ``lr.csv`` (one row per run: algorithm, LoRA learning rate ``lr``, seed, final accuracy)
and ``meta.json`` (the config, the preset's learning rate, the setting) only. The table gives
each method's mean ± std final accuracy over the seeds at every learning rate; the sentences
compare each method's result at the preset's rate (the quality grid's) with its best rate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report._plot import line_chart
from ilora.report._plot import save_png
from ilora.report._table import md_table
from ilora.report._table import pm
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head
from ilora.report.stats import mean_std

Cell = tuple[float, float, int]  # mean %, std %, seeds


def cells(rows: Sequence[Mapping[str, str]]) -> dict[str, dict[float, Cell]]:
    """Return ``algorithm -> lr -> (mean %, std %, seeds)`` of the final accuracy."""
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["algorithm"]][float(r["lr"])].append(100 * float(r["final_accuracy"]))
    return {
        alg: {lr: (*mean_std(xs), len(xs)) for lr, xs in sorted(by_lr.items())}
        for alg, by_lr in acc.items()
    }


def _table(table: Mapping[str, Mapping[float, Cell]], preset: float) -> str:
    lrs = sorted({lr for by_lr in table.values() for lr in by_lr}, reverse=True)
    mark = {lr: " (preset)" if lr == preset else "" for lr in lrs}
    headers = ["algorithm", *(f"lr {lr:g}{mark[lr]}" for lr in lrs), "best lr"]
    body = []
    for alg in sorted(table):
        by_lr = table[alg]
        best = max(by_lr, key=lambda lr: by_lr[lr][0])
        row = [pm(by_lr[lr][0], by_lr[lr][1]) if lr in by_lr else "n/a" for lr in lrs]
        body.append([alg, *row, f"{best:g}"])
    return md_table(headers, body).strip()


def _edge(by_lr: Mapping[float, Cell], best: float) -> str:
    """Return a warning when the best rate is the sweep's smallest or largest one."""
    if len(by_lr) < 2 or best not in (min(by_lr), max(by_lr)):
        return ""
    side, where = ("smallest", "below") if best == min(by_lr) else ("largest", "above")
    return f"; that is the sweep's {side} rate, so the optimum may lie {where} it"


def sentences(table: Mapping[str, Mapping[float, Cell]], preset: float) -> list[str]:
    """Return, per algorithm, its accuracy at the preset's rate and at its best rate."""
    out = []
    for alg in sorted(table):
        by_lr = table[alg]
        best = max(by_lr, key=lambda lr: by_lr[lr][0])
        edge = _edge(by_lr, best)
        if preset not in by_lr:
            out.append(f"{alg}: best at lr {best:g} ({by_lr[best][0]:.2f}%){edge}.")
        elif best == preset:
            out.append(
                f"{alg}: the preset's lr {preset:g} is its best ({by_lr[best][0]:.2f}%){edge}."
            )
        else:
            gain = by_lr[best][0] - by_lr[preset][0]
            out.append(
                f"{alg}: {by_lr[preset][0]:.2f}% at the preset's lr {preset:g}, "
                f"{by_lr[best][0]:.2f}% at lr {best:g} ({gain:+.2f} points){edge}."
            )
    return out


def _figure(table: Mapping[str, Mapping[float, Cell]], img: Path, task: str) -> str:
    series = {alg: (list(by_lr), [c[0] for c in by_lr.values()]) for alg, by_lr in table.items()}
    fig = line_chart(
        series,
        f"{task}: final accuracy against the LoRA learning rate (seed mean)",
        "LoRA learning rate train.lr (log scale)",
        "final accuracy %",
        logx=True,
    )
    return save_png(fig, img, "lr-accuracy", "final accuracy against the learning rate")


def _setting(meta: Mapping[str, Any], seeds: int) -> str:
    setting = meta.get("setting", {})
    lora, data = setting.get("lora", {}), setting.get("data", {})
    ranks = (
        f"ranks {lora.get('ranks')} ({lora.get('rank_policy')})"
        if lora.get("rank_policy") != "uniform"
        else f"rank {lora.get('rank')} for every client"
    )
    return (
        f"Setting: `{meta.get('config', '?')}` ({setting.get('task', '?')}), {ranks}, "
        f"{data.get('partition', '?')} {data.get('partition_args', {})}, "
        f"{setting.get('fed', {}).get('rounds', '?')} rounds, {seeds} seed(s) per cell. Only "
        f"the LoRA learning rate `train.lr` changes; the head's `train.head_lr` stays "
        f"{meta.get('head_lr', '?')}. The quality grid runs every method at the preset's "
        f"lr {meta.get('preset_lr', '?')}."
    )


def render(src: Path, img: Path) -> str:
    """Return the learning-rate sensitivity section (see the module docstring)."""
    meta = read_meta(src)
    rows = read_csv(src / "lr.csv")
    table = cells(rows)
    preset = float(meta.get("preset_lr", "nan"))
    task = str(meta.get("setting", {}).get("task", "?"))
    seeds = len({r["seed"] for r in rows})
    parts = [
        *section_head(f"## Learning-rate sensitivity ({task})", meta),
        _setting(meta, seeds),
        _table(table, preset),
        " ".join(sentences(table, preset)),
        _figure(table, img, task),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
