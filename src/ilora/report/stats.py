"""The one statistics module every report section uses: intervals, paired differences, verdicts.

The rule, stated once and applied everywhere (issue 16):

- A quantity measured over seeds is reported as its mean with a two-sided 95% Student-t
  confidence interval, ``mean ± t_{0.975, n-1} · s / sqrt(n)`` (``s`` the sample standard
  deviation). One seed gives no interval (``n/a``).
- Two methods are compared by their **paired** difference: the per-seed difference ``a_s − b_s``
  over the seeds both finished (the same seed means the same partition, initialisation and
  sampling), with the interval above on those differences.
- The verdict on a difference is ``ahead`` when its whole interval lies above zero, ``behind``
  when it lies below, and ``not separated`` otherwise (or with fewer than two paired seeds).
- A claim that two settings are equivalent within a bound (bf16 against fp32) holds only when
  the whole interval of the paired difference lies within ±bound (:func:`interval_within`).
- A target stated on a mean (the fault campaign's: a gap of at most so many points) is read on
  the mean of the paired differences, the one figure a single seed also gives
  (:func:`mean_within`, :func:`mean_at_least`); the interval is printed beside it.

Only the standard library is imported (``report/`` must not import torch or numpy). The Student
t quantile is computed from the regularised incomplete beta function (Lentz's continued
fraction) and inverted by bisection; ``tests/report/test_stats.py`` checks it against SciPy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95  # the confidence level of every interval in the report
AHEAD, BEHIND, TIED = "ahead", "behind", "not separated"


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its two-sided ``LEVEL`` confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """Return half the interval's width (NaN when there is no interval)."""
        return (self.high - self.low) / 2

    def verdict(self) -> str:
        """Return ``ahead`` / ``behind`` / ``not separated`` for a difference (see the rule)."""
        if self.n < 2 or math.isnan(self.low):
            return TIED
        if self.low > 0:
            return AHEAD
        return BEHIND if self.high < 0 else TIED

    def text(self, digits: int = 2, signed: bool = False) -> str:
        """Return ``mean ± half-width`` (``n/a`` without values; the bare mean for one value)."""
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        sign = "+" if signed else ""
        head = f"{self.mean:{sign}.{digits}f}"
        if self.n < 2:
            return f"{head} (1 seed)"
        return f"{head} ± {self.half_width:.{digits}f}"


def marked(diff: Interval | None) -> str:
    """Return a paired difference as signed ``mean ± half-width``, ▲/▼ when the rule separates.

    ``-`` without a difference (``None`` or no paired seed): the one cell text every table uses.
    """
    if diff is None or diff.n == 0:
        return "-"
    mark = {AHEAD: " ▲", BEHIND: " ▼"}.get(diff.verdict(), "")
    return f"{diff.text(signed=True)}{mark}"


def mean_std(xs: Iterable[float]) -> tuple[float, float]:
    """Return the mean and sample standard deviation of the non-NaN values (0 for one value).

    The descriptive spread printed as ``mean ± std`` beside a table's cells; verdicts use
    :func:`mean_ci` and :func:`paired`.
    """
    vals = [x for x in xs if not math.isnan(x)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def mean_ci(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Return the mean of the finite ``values`` and its Student-t confidence interval."""
    xs = [x for x in values if not math.isnan(x)]
    if not xs:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = t_quantile(0.5 + level / 2, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(mean, mean - half, mean + half, len(xs))


def paired(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Interval:
    """Return the interval of ``a[s] − b[s]`` over the seeds ``s`` where both are finite."""
    seeds = [s for s in a if s in b and not math.isnan(a[s]) and not math.isnan(b[s])]
    return mean_ci((a[s] - b[s] for s in sorted(seeds)), level)


def interval_within(diff: Interval, bound: float) -> bool:
    """Return True if the interval exists (two or more values) and lies within ±``bound``."""
    return diff.n >= 2 and -bound <= diff.low and diff.high <= bound


def mean_within(diff: Interval, bound: float) -> bool:
    """Return True if the mean difference is finite and at most ``bound`` from zero."""
    return not math.isnan(diff.mean) and abs(diff.mean) <= bound


def mean_at_least(diff: Interval, floor: float) -> bool:
    """Return True if the mean difference is finite and at least ``floor``."""
    return not math.isnan(diff.mean) and diff.mean >= floor


def t_quantile(p: float, df: int) -> float:
    """Return the ``p`` quantile of Student's t distribution with ``df`` degrees of freedom."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):  # bisection to double precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2


def t_cdf(t: float, df: int) -> float:
    """Return ``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)  # P(T > |t|)
    return 1 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Return the regularised incomplete beta ``I_x(a, b)`` (continued fraction, Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Return the continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return h


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Return Spearman's rank correlation (average ranks for ties); NaN if undefined."""
    if len(xs) < 3:
        return math.nan
    rx, ry = _ranks(xs), _ranks(ys)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return math.nan
    return statistics.correlation(rx, ry)


def _ranks(xs: Sequence[float]) -> list[float]:
    """Return the ranks of ``xs`` from 0, ties sharing their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def compare_sentence(name: str, other: str, diff: Interval, unit: str = "points") -> str:
    """Return one sentence stating a paired difference and its verdict under the rule."""
    if diff.n == 0:
        return f"{name} and {other} share no finished seed."
    verdict = diff.verdict()
    seeds = f"{diff.n} paired seed{'s' if diff.n != 1 else ''}"
    if diff.n == 1:
        return (
            f"{name} − {other}: {diff.text(signed=True)} {unit}; one seed has no interval, "
            "so it cannot separate them."
        )
    if verdict == TIED:
        return (
            f"{name} − {other}: {diff.text(signed=True)} {unit} over {seeds}; the 95% interval "
            "includes 0, so these seeds do not separate them."
        )
    return f"{name} − {other}: {diff.text(signed=True)} {unit} over {seeds}: {name} is {verdict}."
