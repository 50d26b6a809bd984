"""The one statistics rule, checked against SciPy (an independent implementation)."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sp

from ilora.report import stats


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 29, 100])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.1])
def test_t_quantile_matches_scipy(p: float, df: int) -> None:
    assert stats.t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.0, 0.7, 2.5, 12.0])
def test_t_cdf_matches_scipy(t: float) -> None:
    for df in (1, 4, 17):
        assert stats.t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), abs=1e-12)


def test_mean_ci_is_the_student_t_interval() -> None:
    xs = [61.2, 58.9, 63.4, 60.1, 59.7]
    iv = stats.mean_ci(xs)
    lo, hi = sp.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 5, scale=sp.sem(xs))
    assert (iv.low, iv.high, iv.n) == (pytest.approx(lo), pytest.approx(hi), 5)


def test_paired_uses_only_common_finite_seeds() -> None:
    a = {0: 50.0, 1: 52.0, 2: 51.0, 3: math.nan, 4: 49.0}
    b = {0: 48.0, 1: 49.5, 2: 50.5, 3: 47.0}
    iv = stats.paired(a, b)
    assert iv.n == 3 and iv.mean == pytest.approx((2.0 + 2.5 + 0.5) / 3)


def test_verdict_rule() -> None:
    assert stats.paired({0: 2.0, 1: 2.1, 2: 1.9}, {0: 0.0, 1: 0.0, 2: 0.0}).verdict() == "ahead"
    assert stats.paired({0: -2.0, 1: -2.1, 2: -1.9}, {0: 0, 1: 0, 2: 0}).verdict() == "behind"
    assert stats.paired({0: 3.0, 1: -2.0, 2: 0.5}, {0: 0, 1: 0, 2: 0}).verdict() == "not separated"
    assert stats.paired({0: 5.0}, {0: 0.0}).verdict() == "not separated"  # one seed: no interval


def test_the_sentence_claims_no_interval_for_one_seed() -> None:
    one = stats.compare_sentence("a", "b", stats.paired({0: 5.0}, {0: 0.0}))
    said = "a − b: +5.00 (1 seed) points; one seed has no interval, so it cannot separate them."
    assert one == said
    two = stats.compare_sentence("a", "b", stats.paired({0: 3.0, 1: -2.0}, {0: 0.0, 1: 0.0}))
    assert "over 2 paired seeds; the 95% interval includes 0" in two


def test_spearman_matches_scipy_with_ties() -> None:
    xs, ys = [0.1, 0.4, 0.4, 0.9, 0.2, 0.7], [3.0, 1.0, 2.0, 0.5, 2.0, 1.5]
    assert stats.spearman(xs, ys) == pytest.approx(sp.spearmanr(xs, ys).statistic)


def test_equivalence_needs_the_whole_interval_within_the_bound() -> None:
    xs = [0.2, -0.1, 0.4, 0.1]  # mean 0.15, t-interval from SciPy decides the expected answer
    lo, hi = sp.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 4, scale=sp.sem(xs))
    iv = stats.mean_ci(xs)
    assert -1.0 <= lo and hi <= 1.0 and stats.interval_within(iv, 1.0)
    assert hi > 0.3 and not stats.interval_within(iv, 0.3)  # the mean is inside, the interval not
    assert not stats.interval_within(stats.mean_ci([0.0]), 1.0)  # one seed: no interval


def test_targets_on_a_mean_read_the_mean_even_for_one_seed() -> None:
    gaps = stats.mean_ci([-0.5, -1.3])  # mean -0.9
    assert stats.mean_within(gaps, 1.0) and not stats.mean_within(gaps, 0.8)
    assert stats.mean_at_least(gaps, -1.0) and not stats.mean_at_least(gaps, -0.8)
    one = stats.mean_ci([-2.0])
    assert stats.mean_at_least(one, -2.0) and not stats.mean_within(one, 1.9)
    empty = stats.mean_ci([math.nan])
    assert not stats.mean_within(empty, 10.0) and not stats.mean_at_least(empty, -10.0)


def test_mean_std_is_the_sample_spread_of_the_finite_values() -> None:
    xs = [61.2, math.nan, 58.9, 63.4]
    mean, std = stats.mean_std(xs)
    finite = [61.2, 58.9, 63.4]
    assert mean == pytest.approx(sp.describe(finite).mean)
    assert std == pytest.approx(math.sqrt(sp.describe(finite).variance))  # ddof 1
    assert stats.mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in stats.mean_std([math.nan]))
