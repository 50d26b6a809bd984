"""The second family of methods, compared in one setting: heterogeneous ranks, Dirichlet 0.1.

Issue 16 asks for the first family (FedIT ... ILoRA-S) in every setting of the protocol and for
the second (:data:`SECOND_FAMILY`) tuned and compared at least in heterogeneous ranks,
alpha 0.1. The comparison tables list every variant only in the settings where it has runs;
this subsection gathers the second family where it was compared: each method's test accuracy,
its paired differences against FedIT and against the best first-family method of that setting
(:mod:`ilora.report.stats`, the one rule), and for a personalized method (tuned on its clients'
own models, ``metric`` of ``tune.csv``) the same on its clients' own models, where the
reference methods are scored by their models as sent to each client, on the same test shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence

from ilora.report import stats
from ilora.report._table import BASELINE
from ilora.report._table import CENTRAL
from ilora.report._table import md_table
from ilora.report._table import missing_seeds
from ilora.report._table import setting_seeds

Row = Mapping[str, str]
Cell = Mapping[str, Mapping[int, float]]  # variant -> seed -> accuracy %
Key = tuple[str, str, float]  # task, ranks, alpha
SECOND_FAMILY = (
    "fedloru",
    "pfedloru",
    "mfedloru",
    "ce-lora",
    "fslora",
    "frlora",
    "flasc",
    "fl-tac",
    "fedlease",
)
RANKS, ALPHA = "heterogeneous", 0.1
PERSONAL_METRIC = "personal_accuracy"


def in_second_family(variant: str) -> bool:
    """Return whether ``variant`` (``name`` or ``name+key=value``) is a second-family method."""
    return variant.split("+", 1)[0] in SECOND_FAMILY


def _order(variant: str) -> tuple[int, str]:
    return SECOND_FAMILY.index(variant.split("+", 1)[0]), variant


def best_first_family(cell: Cell) -> str | None:
    """Return the first-family method (no ablation) with the best mean in ``cell``, if any."""
    means = {
        v: stats.mean_ci(s.values()).mean
        for v, s in cell.items()
        if v != CENTRAL and "+" not in v and not in_second_family(v)
    }
    finite = {v: m for v, m in means.items() if not math.isnan(m)}
    return max(finite, key=lambda v: finite[v]) if finite else None


def _against(cell: Cell, variant: str) -> list[str]:
    """Return mean ± CI, − fedit and − the best first-family method of ``variant`` in ``cell``."""
    best = best_first_family(cell)
    own = cell[variant]
    vs_base = stats.paired(own, cell[BASELINE]) if BASELINE in cell else None
    vs_best = stats.paired(own, cell[best]) if best else None
    return [
        stats.mean_ci(own.values()).text(),
        stats.marked(vs_base),
        f"{best}: {stats.marked(vs_best)}" if best else "-",
    ]


def table(cell: Cell, personal: Cell, tuned: Mapping[str, Row]) -> str:
    """Return one row per second-family variant in ``cell`` (global and own-model columns).

    ``tuned`` maps a variant to its chosen ``tune.csv`` row (rate and metric).
    """
    body = []
    for v in sorted((v for v in cell if in_second_family(v)), key=_order):
        row = tuned.get(v, {})
        rate = f"{float(row['lr']):.3g}" if row else "not in tune.csv"
        own = ["-", "-", "-"]
        if row.get("metric") == PERSONAL_METRIC and v in personal:
            own = _against(personal, v)
        body.append([v, rate, *_against(cell, v), *own])
    headers = [
        "method",
        "tuned lr",
        "test accuracy % (95% CI)",
        "− fedit",
        "− best first family",
        "own models %",
        "own − fedit",
        "own − best first family",
    ]
    return md_table(headers, body)


def _chosen(tune: Sequence[Row], task: str) -> dict[str, Row]:
    return {r["variant"]: r for r in tune if r["task"] == task and r["chosen"] == "1"}


def _task_part(task: str, cell: Cell, personal: Cell, tuned: Mapping[str, Row]) -> str:
    compared = [v for v in cell if in_second_family(v)]
    not_run = sorted((v for v in tuned if in_second_family(v) and v not in cell), key=_order)
    parts = [f"**{task}**"]
    if compared:
        parts.append(table(cell, personal, tuned))
        own = {v: cell[v] for v in (*compared, BASELINE) if v in cell}
        gaps = missing_seeds(own, setting_seeds(cell, CENTRAL))
        parts.append(gaps or "Every method has every seed of this setting.")
    if not_run:
        parts.append(f"Tuned, not compared in this setting yet: {', '.join(not_run)}.")
    return "\n\n".join(parts)


INTRO = (
    "The methods of the second family ({names}) are compared with heterogeneous ranks and "
    "Dirichlet α = {alpha:g} at least, at their tuned rates (listed with the others in the "
    "table of chosen rates) and the task's horizon; here they are gathered in that setting "
    "(the comparison tables list every method in the settings where it has runs, and only "
    "there). Differences are paired by seed; − best first family is against the "
    "first-family method (ablations aside) with the best mean in the setting. A personalized "
    "method (tuned on its clients' own models) is also scored by those models on the "
    "clients' test shares (own models %), against the other methods' models as each client "
    "receives them, on the same shares; a method that is not personalized shows - there.\n"
)


def render(finals: Mapping[Key, Cell], personal: Mapping[Key, Cell], tune: Sequence[Row]) -> str:
    """Return the subsection, one part per task with second-family runs or tunings ("" if none)."""
    tasks = {k[0] for k in finals} | {r["task"] for r in tune if in_second_family(r["variant"])}
    parts = []
    for task in sorted(tasks):
        key = (task, RANKS, ALPHA)
        cell, tuned = finals.get(key, {}), _chosen(tune, task)
        if any(in_second_family(v) for v in (*cell, *tuned)):
            parts.append(_task_part(task, cell, personal.get(key, {}), tuned))
    if not parts:
        return ""
    head = f"### The second family (heterogeneous ranks, α = {ALPHA:g})\n\n"
    intro = INTRO.format(names=", ".join(SECOND_FAMILY), alpha=ALPHA)
    return head + intro + "\n" + "\n\n".join(parts) + "\n"
