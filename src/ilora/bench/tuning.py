"""The choices the comparison protocol makes on validation data: learning rate and horizon.

Pure functions of run histories (``history.jsonl`` records), so the rules are tested directly.

- **Rates** come from a log grid with ratio ``sqrt(10)`` (two rates per decade, ``10^(e/2)``
  for whole ``e``, three significant digits): :func:`rate_grid`. A method's score at a rate is
  its validation accuracy averaged over the last :data:`SCORE_WINDOW` evaluated rounds
  (:func:`score`; less noisy than the last round alone); a run that diverged or was stopped
  scores NaN, below every finished run. The chosen rate is the best score's; among tied best
  scores, the middle one in log scale (:func:`choose`). While a unique best sits at an edge of
  the rates tried, the grid is extended one step past that edge (:func:`extension`), at most
  :data:`MAX_EXTENSIONS` times per side.
- **Horizon**: a run has plateaued at round ``t`` when the best validation accuracy of its last
  :data:`PLATEAU_WINDOW` evaluations (up to ``t``) is less than :data:`PLATEAU_TOL` points
  above the best before them (:func:`plateau_round`). A best-so-far criterion rather than "the
  last five within 0.5 points", because a 0.5-point band is narrower than the sampling noise of
  a validation accuracy over a few thousand examples (about 1 point at 50%), so the band test
  would wait for luck rather than convergence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

STEP = math.sqrt(10.0)  # ratio between neighbouring rates
SCORE_WINDOW = 3  # evaluations averaged into a rate's score
SENSITIVITY_WINDOWS = (5, 10)  # longer windows the report re-scores with (never to choose)
MAX_EXTENSIONS = 3  # grid steps added past each edge at most
PLATEAU_WINDOW = 5  # evaluations in the plateau test
PLATEAU_TOL = 0.5  # accuracy points


def rate_grid(low: float, n: int) -> list[float]:
    """Return ``n`` grid rates upward from the grid point nearest ``low``."""
    if low <= 0 or n < 1:
        raise ValueError(f"rate_grid needs low > 0 and n >= 1, got {low}, {n}")
    first = _exponent(low)
    return [_rate(first + i) for i in range(n)]


def _exponent(rate: float) -> int:
    """Return ``e`` of the grid point ``10^(e/2)`` nearest ``rate``."""
    return round(2 * math.log10(rate))


def _rate(e: int) -> float:
    return float(f"{10 ** (e / 2):.3g}")


def accuracies(history: Sequence[Mapping[str, Any]], metric: str = "accuracy") -> list[float]:
    """Return the evaluated ``metric`` of a run, in %, in round order."""
    return [100 * float(r[metric]) for r in history if r.get(metric) is not None]


def score(
    history: Sequence[Mapping[str, Any]], metric: str = "accuracy", window: int = SCORE_WINDOW
) -> float:
    """Return the mean validation ``metric`` (%) of the last ``window`` evaluations (NaN: none).

    ``metric`` is ``accuracy`` (the global model) or, for a personalized method,
    ``personal_accuracy`` (each client's own model on its validation share). The rule is the
    default ``window``; others serve the report's sensitivity study of it.
    """
    tail = accuracies(history, metric)[-window:]
    if not tail or any(math.isnan(a) for a in tail):
        return math.nan
    return sum(tail) / len(tail)


def run_name(rate: float) -> str:
    """Return the name of the tuning run directory (and record) of ``rate``, e.g. ``lr0.001``."""
    return f"lr{rate:g}"


def _best(scores: Mapping[float, float]) -> list[float]:
    """Return the rates that share the best finite score, ascending."""
    finite = {r: s for r, s in scores.items() if not math.isnan(s)}
    if not finite:
        raise ValueError("no rate finished with a finite score; widen the grid downward")
    top = max(finite.values())
    return sorted(r for r, s in finite.items() if s == top)


def choose(scores: Mapping[float, float]) -> float:
    """Return the rate of the best score (NaN scores lose; ties: the middle one in log scale)."""
    tied = _best(scores)
    return tied[(len(tied) - 1) // 2]


def extension(scores: Mapping[float, float], grid: Sequence[float]) -> float | None:
    """Return the next rate to try when the best sits at an edge of the rates tried, else None.

    ``grid`` is the starting grid: at most :data:`MAX_EXTENSIONS` rates are added past either
    of its ends.
    """
    tried = sorted(scores)
    below = sum(r < min(grid) for r in tried) < MAX_EXTENSIONS
    above = sum(r > max(grid) for r in tried) < MAX_EXTENSIONS
    if all(math.isnan(s) for s in scores.values()):  # every rate diverged: go lower
        return _rate(_exponent(tried[0]) - 1) if below else None
    tied = _best(scores)
    if len(tied) > 1:
        return None
    if tied[0] == tried[0] and below:
        return _rate(_exponent(tried[0]) - 1)
    if tied[0] == tried[-1] and above:
        return _rate(_exponent(tried[-1]) + 1)
    return None


def plateau_round(history: Sequence[Mapping[str, Any]]) -> int | None:
    """Return the first round at which the run has plateaued (see the module), else None."""
    evaluated = [
        (int(r["round"]), 100 * float(r["accuracy"]))
        for r in history
        if r.get("accuracy") is not None
    ]
    for i in range(PLATEAU_WINDOW, len(evaluated)):
        before = max(a for _, a in evaluated[: i + 1 - PLATEAU_WINDOW])
        recent = max(a for _, a in evaluated[i + 1 - PLATEAU_WINDOW : i + 1])
        if recent - before < PLATEAU_TOL:
            return evaluated[i][0]
    return None
