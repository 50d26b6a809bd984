"""The quality grid's result files as numbers: per setting mean ± std, ranks, what is missing.

Shared by :mod:`ilora.report.quality` (tables, plots) and its sentences. A *setting* is
``(task, ranks, alpha)``; the centralized line trains on pooled data, so its runs (made at one
alpha) stand for every alpha of their ``(task, ranks)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ilora.report._table import CENTRAL
from ilora.report._table import num
from ilora.report.stats import mean_std

Setting = tuple[str, str, float]  # task, ranks, alpha


@dataclass(frozen=True)
class Stat:
    """Mean ± std over the finished seeds of one method in one setting (accuracy in %).

    ``by_seed`` keeps each finished seed's value, for paired differences (``report.stats``).
    """

    mean: float
    std: float
    n: int
    by_seed: dict[int, float] = field(default_factory=dict)


def setting_of(row: Mapping[str, str]) -> Setting:
    return row["task"], row["ranks"], float(row["alpha"])


def stats(
    rows: Sequence[Mapping[str, str]], metric: str, alphas: Sequence[float] = ()
) -> dict[Setting, dict[str, Stat]]:
    """Return ``{setting: {algorithm: Stat}}`` of ``metric`` (a fraction, shown in %).

    The centralized runs count for every alpha in ``alphas`` (their training data is pooled);
    with ``alphas`` empty they count only where they ran.
    """
    values: dict[Setting, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        task, ranks, alpha = setting_of(row)
        targets = alphas if row["algorithm"] == CENTRAL and alphas else [alpha]
        for a in targets:
            values[(task, ranks, a)][row["algorithm"]][int(row["seed"])] = 100 * num(row[metric])
    out: dict[Setting, dict[str, Stat]] = {}
    for setting, by_alg in values.items():
        out[setting] = {}
        for alg, seeds in by_alg.items():
            mean, std = mean_std(seeds.values())
            finite = {s: x for s, x in seeds.items() if not math.isnan(x)}
            out[setting][alg] = Stat(mean, std, len(finite), finite)
    return out


def ranks_in(cell: Mapping[str, Stat]) -> dict[str, int]:
    """Return each federated method's rank by mean (1 = best; ties share the better rank)."""
    fed = {a: s.mean for a, s in cell.items() if a != CENTRAL and not math.isnan(s.mean)}
    return {a: 1 + sum(other > m for other in fed.values()) for a, m in fed.items()}


def expected(meta: Mapping[str, Any]) -> dict[Setting, dict[str, int]]:
    """Return ``{setting: {algorithm: seeds expected}}`` from the grid axes in ``meta``."""
    seeds = len(meta["seeds"])
    out: dict[Setting, dict[str, int]] = {}
    for task in meta["tasks"]:
        home = float(meta["centralized_alpha"][task])
        for ranks in meta["ranks"]:
            for alpha in meta["alphas"]:
                cell = {alg: seeds for alg in meta["algorithms"]}
                out[(task, ranks, float(alpha))] = cell
            out.setdefault((task, ranks, home), {})[CENTRAL] = seeds
    return out


def missing(
    meta: Mapping[str, Any], rows: Sequence[Mapping[str, str]]
) -> list[tuple[Setting, int, int]]:
    """Return ``(setting, finished, expected)`` for every setting with runs missing."""
    done: dict[Setting, int] = defaultdict(int)
    for row in rows:
        done[setting_of(row)] += 1
    out = []
    for setting, cell in sorted(expected(meta).items()):
        want = sum(cell.values())
        if done[setting] < want:
            out.append((setting, done[setting], want))
    return out


def runs_per_round(rows: Sequence[Mapping[str, str]], setting: Setting) -> list[dict[str, Any]]:
    """Return compare-style runs (``algorithm``, ``history``) of one setting from rounds.csv."""
    history: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        task, ranks, alpha = setting_of(row)
        if (task, ranks) != setting[:2] or (alpha != setting[2] and row["algorithm"] != CENTRAL):
            continue
        rec = {
            "round": int(row["round"]),
            "accuracy": num(row["accuracy"]),
            "agg_error": num(row["agg_error"]),
            "download_error": num(row.get("download_error")),
            "mb": (num(row["bytes_up_cum"]) + num(row["bytes_down_cum"])) / 1e6,
        }
        history[(row["algorithm"], row["seed"])].append(
            {k: v for k, v in rec.items() if not (isinstance(v, float) and math.isnan(v))}
        )
    return [{"algorithm": alg, "history": h} for (alg, _), h in sorted(history.items())]
