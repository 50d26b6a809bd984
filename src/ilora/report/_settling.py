"""How settled each compared method is at its end: the swing of its last test evaluations.

A final test accuracy is one evaluation. While a method's global model still swings from one
evaluation to the next (rounds whose sampled clients hold mostly one class pull it towards
that class), its final number is a draw from that swing, and a paired difference built on it
says more about the draw than about the method. A run's swing is the range (max − min, in
points) of its last ``window`` test evaluations, the window the tuning score averages
(``rules.score_window`` in ``meta.json``); a method's swing is the median over its seeds. One
line under each comparison table names them, so a reader sees which finals to trust.

A personalized method is judged on its clients' own models, which are evaluated once, at the
end; the swing of its global model (often a constant, untrained head: range 0) would read as
steady while that model is wrong, so those methods get none (``personalized``, the variants
``tune.csv`` tuned on ``personal_accuracy``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from collections.abc import Set

from ilora.report._table import CENTRAL
from ilora.report._table import num

Row = Mapping[str, str]
Key = tuple[str, str, float]  # task, ranks, alpha


def _evaluations(rounds: Sequence[Row]) -> dict[tuple[Key, str, int], list[tuple[int, float]]]:
    """Return each run's evaluated ``(round, accuracy %)``, keyed by setting, variant, seed."""
    out: dict[tuple[Key, str, int], list[tuple[int, float]]] = defaultdict(list)
    for r in rounds:
        acc = num(r.get("accuracy"))
        if acc == acc:  # not NaN: an evaluated round
            key = (r["task"], r["ranks"], float(r["alpha"]))
            out[(key, r["variant"], int(r["seed"]))].append((int(r["round"]), 100 * acc))
    return out


def swings(
    rounds: Sequence[Row], window: int, personalized: Set[str]
) -> dict[Key, dict[str, float]]:
    """Return ``{setting: {variant: median over seeds of the last-``window`` range}}``.

    The centralized line ran once per task and rank setting; it stands in every α of it, as in
    the comparison tables. A run with fewer than ``window`` evaluations has no swing, and a
    ``window`` below 2 (results without recorded rules) gives none.
    """
    if window < 2:
        return {}
    per_run: dict[tuple[Key, str], list[float]] = defaultdict(list)
    alphas: dict[tuple[str, str], set[float]] = defaultdict(set)
    for (key, variant, _seed), evals in _evaluations(rounds).items():
        alphas[key[:2]].add(key[2])
        if variant in personalized:
            continue
        last = [a for _, a in sorted(evals)[-window:]]
        if len(last) == window:
            per_run[(key, variant)].append(max(last) - min(last))
    out: dict[Key, dict[str, float]] = defaultdict(dict)
    for (key, variant), ranges in per_run.items():
        where = alphas[key[:2]] if variant == CENTRAL else {key[2]}
        for alpha in where:
            out[(key[0], key[1], alpha)][variant] = statistics.median(ranges)
    return out


def note(swing: Mapping[str, float], window: int) -> str:
    """Return the line naming every method's swing in one setting, steadiest first."""
    if not swing:
        return ""
    words = ", ".join(f"{v} {s:.1f}" for v, s in sorted(swing.items(), key=lambda kv: kv[1]))
    return (
        f"Swing at the end (range of the last {window} test evaluations of the global model, "
        f"points; median over seeds; a large one makes the final accuracy a draw from it; "
        f"personalized methods have none): {words}."
    )
