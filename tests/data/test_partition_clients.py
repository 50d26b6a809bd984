"""Tests for the per-client Dirichlet partitioner ``dirichlet-clients`` (Hsu et al. 2019).

Seed determinism and independence from row order are checked beside the other partitioners'
in ``test_partition.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from ilora.data.partition import label_histogram
from ilora.data.partition_clients import _draw_classes
from ilora.data.partition_clients import dirichlet_clients
from ilora.seeding import np_rng

FAST = settings(max_examples=50, deadline=None)


@st.composite
def labelled(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    num_clients = draw(st.integers(1, 6))
    num_classes = draw(st.integers(1, 6))
    n = draw(st.integers(num_clients, 200))
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    return np.asarray(labels, dtype=np.int64), num_clients


def reference(
    labels: list[int], num_clients: int, alpha: float, seed: int
) -> tuple[list[list[int]], bool]:
    """The definition written out with lists: the parts, and whether a class ran out mid-way."""
    classes = sorted(set(labels))
    count = {c: labels.count(c) for c in classes}
    mix = {
        k: np_rng(seed, "dirichlet-clients", "mix", k).dirichlet(
            [alpha * count[c] / len(labels) for c in classes]
        )
        for k in range(num_clients)
    }
    pool = {}
    for c in classes:
        rows = [i for i, y in enumerate(labels) if y == c]
        pool[c] = [
            rows[j] for j in np_rng(seed, "dirichlet-clients", "rows", c).permutation(len(rows))
        ]
    size = len(labels) // num_clients
    u = np_rng(seed, "dirichlet-clients", "draws").random((size, num_clients))
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    ran_out = False
    for t in range(size):
        for k in range(num_clients):
            live = [(c, mix[k][i]) for i, c in enumerate(classes) if pool[c]]
            ran_out |= len(live) < len(classes)
            if sum(w for _, w in live) <= 0:
                live = [(c, float(len(pool[c]))) for c, _ in live]
            target, acc = u[t, k] * sum(w for _, w in live), 0.0
            pick = [c for c, w in live if w > 0][-1]
            for c, w in live:
                acc += w
                if target < acc:
                    pick = c
                    break
            parts[k].append(pool[pick].pop(0))
    return [sorted(p) for p in parts], ran_out


def test_golden_against_the_definition_written_out() -> None:
    labels = [2, 0, 1, 0, 2, 2, 1, 0, 0, 1, 2, 0, 0, 0, 1, 2, 0]  # 17 rows: 2 dropped at 3 clients
    exhausted = 0
    for alpha in (0.01, 0.05, 0.5, 50.0):
        for seed in range(10):
            want, ran_out = reference(labels, 3, alpha, seed)
            got = dirichlet_clients(np.array(labels), 3, alpha, seed)
            assert [p.tolist() for p in got] == want, (alpha, seed)
            exhausted += ran_out
    assert exhausted > 0, "no case drew after a class ran out: the renormalization is untested"


def test_a_mix_used_up_draws_in_proportion_to_the_examples_left() -> None:
    # one client wanting only class 0, of which one example exists; then classes 1 and 2
    # hold 1 and 3 examples: u = 0.3 of weights (0, 1, 3) lands in class 2 (of (0, 1, 1)
    # it would land in class 1), then u = 0.5 of (0, 1, 2) lands in class 2 again
    mixes = np.array([[1.0, 0.0, 0.0]])
    got = _draw_classes(mixes, np.array([1, 1, 3]), np.array([[0.5], [0.3], [0.5]]))
    assert got.tolist() == [[0], [2], [2]]


@FAST
@given(case=labelled(), alpha=st.floats(0.01, 100.0), seed=st.integers(0, 2**31))
def test_equal_sizes_disjoint_sorted_valid_rows(
    case: tuple[np.ndarray, int], alpha: float, seed: int
) -> None:
    labels, num_clients = case
    parts = dirichlet_clients(labels, num_clients, alpha, seed)
    assert len(parts) == num_clients
    size = labels.size // num_clients
    for part in parts:
        assert part.dtype == np.int64
        assert part.size == size
        assert np.all(np.diff(part) > 0)
        assert part.size == 0 or (part[0] >= 0 and part[-1] < labels.size)
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size == num_clients * size  # remainder dropped


def mean_max_share(labels: np.ndarray, alpha: float, seeds: range) -> float:
    shares = []
    for seed in seeds:
        hist = label_histogram(labels, dirichlet_clients(labels, 10, alpha, seed), 10)
        shares.append((hist.max(axis=1) / hist.sum(axis=1)).mean())
    return float(np.mean(shares))


def test_skew_grows_as_alpha_falls() -> None:
    labels = np.repeat(np.arange(10), 300)
    share = {a: mean_max_share(labels, a, range(3)) for a in (0.1, 1.0, 10.0)}
    assert share[0.1] > share[1.0] > share[10.0]
    assert share[0.1] > 0.5  # a client mostly holds one class
    assert share[10.0] < 0.3  # near the uniform prior's 0.1


def test_two_classes_twenty_clients_alpha_tenth_builds() -> None:
    # the case per-class Dir(0.1 * 1) shares cannot build: most clients end almost empty
    labels = np.random.default_rng(0).permutation(np.repeat([0, 1], [2600, 2500]))
    parts = dirichlet_clients(labels, 20, 0.1, 100, min_size=20)
    assert {p.size for p in parts} == {255}
    hist = label_histogram(labels, parts, 2)
    assert (hist.max(axis=1) / 255).mean() > 0.8  # clients mostly hold one class


def test_string_labels() -> None:
    labels = np.array(["pos", "neg"] * 30)
    parts = dirichlet_clients(labels, 4, 0.2, 0)
    assert [p.size for p in parts] == [15] * 4


L = np.arange(20) % 4


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: dirichlet_clients(L, 0, 1.0, 0), ["num_clients"]),
        (lambda: dirichlet_clients(L, 2, 0.0, 0), ["alpha"]),
        (lambda: dirichlet_clients(L, 2, float("nan"), 0), ["alpha"]),
        (lambda: dirichlet_clients(L, 2, "1", 0), ["alpha"]),
        (lambda: dirichlet_clients(L, 2, 1.0, 0, min_size=0), ["min_size"]),
        (lambda: dirichlet_clients(L.reshape(4, 5), 2, 1.0, 0), ["labels"]),
        (lambda: dirichlet_clients(L, 21, 1.0, 0), ["20 // 21 = 0", "num_clients"]),
        (
            lambda: dirichlet_clients(L, 3, 1.0, 0, min_size=7),
            ["20 // 3 = 6", "min_size=7", "lower num_clients or min_size"],
        ),
    ],
)
def test_errors_name_the_argument(call: Callable[[], object], words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    for word in words:
        assert word in text
