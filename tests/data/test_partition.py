"""Property tests for the pure index partitioners (DESIGN.md section 4.6 item 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from ilora.data.partition import by_group
from ilora.data.partition import dirichlet
from ilora.data.partition import iid
from ilora.data.partition import label_histogram
from ilora.data.partition import shards
from ilora.data.partition_clients import dirichlet_clients
from ilora.data.partitioners import PARTITIONERS
from ilora.registry import UnknownNameError

FAST = settings(max_examples=50, deadline=None)

Parts = list[np.ndarray]


def assert_disjoint_cover(parts: Parts, n: int) -> None:
    for part in parts:
        assert part.dtype == np.int64
        assert part.size > 0
        assert np.all(np.diff(part) > 0), "each part must be sorted ascending without repeats"
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(n))


def same_parts(a: Parts, b: Parts) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@st.composite
def labelled(draw: st.DrawFn, max_classes: int = 6) -> tuple[np.ndarray, int]:
    """Labels with every client able to reach a few examples, plus a client count."""
    num_clients = draw(st.integers(1, 6))
    num_classes = draw(st.integers(1, max_classes))
    n = draw(st.integers(num_clients * 8, 200))
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    return np.asarray(labels, dtype=np.int64), num_clients


@st.composite
def grouped(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    num_clients = draw(st.integers(1, 6))
    num_groups = draw(st.integers(num_clients, 15))
    n = draw(st.integers(num_groups, 120))
    groups = draw(st.lists(st.integers(0, num_groups - 1), min_size=n, max_size=n))
    assume(len(set(groups)) >= num_clients)
    return np.asarray(groups, dtype=np.int64), num_clients


# ---------------------------------------------------------------------------------------------
# disjoint cover and seeding, every partitioner


@FAST
@given(n=st.integers(1, 300), data=st.data(), seed=st.integers(0, 2**31))
def test_iid_cover_and_balance(n: int, data: st.DataObject, seed: int) -> None:
    num_clients = data.draw(st.integers(1, n))
    parts = iid(n, num_clients, seed)
    assert len(parts) == num_clients
    assert_disjoint_cover(parts, n)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1


@FAST
@given(case=labelled(), alpha=st.floats(0.5, 100.0), seed=st.integers(0, 2**31))
def test_dirichlet_cover_and_min_size(
    case: tuple[np.ndarray, int], alpha: float, seed: int
) -> None:
    labels, num_clients = case
    parts = dirichlet(labels, num_clients, alpha, seed, min_size=2)
    assert len(parts) == num_clients
    assert_disjoint_cover(parts, labels.size)
    assert min(p.size for p in parts) >= 2


@FAST
@given(case=labelled(), spc=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_shards_cover(case: tuple[np.ndarray, int], spc: int, seed: int) -> None:
    labels, num_clients = case
    assume(labels.size >= num_clients * spc)
    parts = shards(labels, num_clients, spc, seed)
    assert len(parts) == num_clients
    assert_disjoint_cover(parts, labels.size)


@FAST
@given(case=grouped(), seed=st.integers(0, 2**31))
def test_by_group_cover_and_groups_whole(case: tuple[np.ndarray, int], seed: int) -> None:
    groups, num_clients = case
    parts = by_group(groups, num_clients, seed)
    assert len(parts) == num_clients
    assert_disjoint_cover(parts, groups.size)
    owners = [{int(g) for g in groups[p]} for p in parts]
    for g in np.unique(groups):
        assert sum(int(g) in o for o in owners) == 1, f"group {g} is on more than one client"
    # greedy to the smallest client keeps the spread within the largest group's size
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= np.bincount(groups).max()


def test_by_group_accepts_string_groups() -> None:
    groups = np.array(["b", "a", "c", "a", "b", "d", "d", "d"])
    parts = by_group(groups, 2, seed=0)
    assert_disjoint_cover(parts, groups.size)
    for name in "abcd":
        assert sum(name in set(groups[p]) for p in parts) == 1


PartitionCall = Callable[[np.ndarray, int, int], Parts]

CALLS: dict[str, PartitionCall] = {
    "iid": lambda labels, k, seed: iid(labels.size, k, seed),
    "dirichlet": lambda labels, k, seed: dirichlet(labels, k, 1.0, seed, min_size=1),
    "dirichlet-clients": lambda labels, k, seed: dirichlet_clients(labels, k, 1.0, seed),
    "shards": lambda labels, k, seed: shards(labels, k, 2, seed),
    "by_group": lambda labels, k, seed: by_group(labels, k, seed),
}
FIXED_LABELS = np.random.default_rng(0).integers(0, 12, size=240)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_same_seed_same_partition_different_seed_differs(name: str) -> None:
    call = CALLS[name]
    first = call(FIXED_LABELS, 4, 7)
    assert same_parts(first, call(FIXED_LABELS, 4, 7))
    others = [call(FIXED_LABELS, 4, s) for s in (8, 9, 10)]
    assert not all(same_parts(first, o) for o in others)


@FAST
@given(case=labelled(), seed=st.integers(0, 2**31))
def test_seed_determinism_property(case: tuple[np.ndarray, int], seed: int) -> None:
    labels, num_clients = case
    for call in CALLS.values():
        if call is CALLS["by_group"] and np.unique(labels).size < num_clients:
            continue
        if call is CALLS["shards"] and labels.size < 2 * num_clients:
            continue
        assert same_parts(call(labels, num_clients, seed), call(labels, num_clients, seed))


# ---------------------------------------------------------------------------------------------
# Dirichlet behaviour


def mean_tv_to_global(labels: np.ndarray, parts: Parts, num_classes: int) -> float:
    hist = label_histogram(labels, parts, num_classes).astype(float)
    local = hist / hist.sum(axis=1, keepdims=True)  # (num_clients, num_classes)
    glob = np.bincount(labels, minlength=num_classes) / labels.size  # (num_classes,)
    return float(0.5 * np.abs(local - glob).sum(axis=1).mean())


def test_dirichlet_mix_approaches_global_as_alpha_grows() -> None:
    labels = np.repeat(np.arange(10), 200)
    tv = {
        a: mean_tv_to_global(labels, dirichlet(labels, 5, a, seed=3, min_size=1), 10)
        for a in (0.05, 1.0, 1000.0)
    }
    assert tv[0.05] > tv[1.0] > tv[1000.0]
    assert tv[0.05] > 0.4
    assert tv[1000.0] < 0.05


@pytest.mark.parametrize("fn", [dirichlet, dirichlet_clients], ids=["per-class", "per-client"])
@FAST
@given(case=labelled(), seed=st.integers(0, 2**31), data=st.data())
def test_dirichlet_partition_maps_through_class_order_preserving_permutation(
    fn: Callable[..., Parts], case: tuple[np.ndarray, int], seed: int, data: st.DataObject
) -> None:
    # Rows with equal labels are indistinguishable, so the exact partition can only follow a
    # permutation that keeps each class's rows in their relative order (any interleaving of
    # classes); under it the partition must map through exactly. Any reordering of the rows
    # leaves the same label sequence as one of these, so every client's label histogram is
    # independent of the row order.
    labels, num_clients = case
    slots = np.asarray(data.draw(st.permutations(range(labels.size))), dtype=np.int64)
    for c in np.unique(labels):
        where = labels[slots] == c
        slots[where] = np.sort(slots[where])  # class c's rows keep their relative order
    new_labels = labels[slots]  # new row j is old row slots[j]
    base = fn(labels, num_clients, 0.7, seed, min_size=1)
    moved = fn(new_labels, num_clients, 0.7, seed, min_size=1)
    mapped = [np.sort(slots[p]) for p in moved]
    assert same_parts(base, mapped)


# ---------------------------------------------------------------------------------------------
# shards behaviour


@FAST
@given(
    num_clients=st.integers(1, 6),
    spc=st.integers(1, 3),
    shard_size=st.integers(1, 5),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_shards_aligned_with_classes_give_at_most_k_labels(
    num_clients: int, spc: int, shard_size: int, seed: int, data: st.DataObject
) -> None:
    num_shards = num_clients * spc
    # a random composition of num_shards: class c holds shards_of[c] whole shards
    inner = st.sets(st.integers(1, max(num_shards - 1, 1)), max_size=num_shards - 1)
    cuts = sorted(c for c in data.draw(inner) if c < num_shards)
    shards_of = np.diff([0, *cuts, num_shards])
    labels = np.repeat(np.arange(shards_of.size), shards_of * shard_size)
    labels = labels[np.random.default_rng(seed % 1000).permutation(labels.size)]
    parts = shards(labels, num_clients, spc, seed)
    assert_disjoint_cover(parts, labels.size)
    for part in parts:
        assert part.size == spc * shard_size
        assert np.unique(labels[part]).size <= spc


# ---------------------------------------------------------------------------------------------
# label_histogram


def test_label_histogram_counts() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    hist = label_histogram(labels, [np.array([0, 3]), np.array([1, 2, 4, 5])], 4)
    np.testing.assert_array_equal(hist, [[1, 0, 1, 0], [0, 2, 2, 0]])


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_names() -> None:
    assert PARTITIONERS.names() == ["by_group", "dirichlet", "dirichlet-clients", "iid", "shards"]


def test_registry_adapters_match_functions() -> None:
    labels, groups = FIXED_LABELS, FIXED_LABELS % 7
    get = PARTITIONERS.get
    assert same_parts(get("iid")(labels, None, 3, 1), iid(labels.size, 3, 1))
    assert same_parts(
        get("dirichlet")(labels, None, 3, 1, alpha=0.5, min_size=2),
        dirichlet(labels, 3, 0.5, 1, min_size=2),
    )
    assert same_parts(
        get("dirichlet-clients")(labels, None, 3, 1, alpha=0.5, min_size=2),
        dirichlet_clients(labels, 3, 0.5, 1, min_size=2),
    )
    assert same_parts(
        get("shards")(labels, None, 3, 1, shards_per_client=2), shards(labels, 3, 2, 1)
    )
    assert same_parts(get("by_group")(labels, groups, 3, 1), by_group(groups, 3, 1))


def test_registry_unknown_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'dirichlet'"):
        PARTITIONERS.get("dirichlett")


def test_by_group_adapter_without_groups() -> None:
    with pytest.raises(ValueError, match="no natural groups; use dirichlet or iid"):
        PARTITIONERS.get("by_group")(FIXED_LABELS, None, 3, 0)


@pytest.mark.parametrize(
    ("name", "kwargs", "words"),
    [
        ("iid", {"alpha": 1.0}, ["alpha", "accepted: none"]),
        ("dirichlet", {"alpha": 1.0, "beta": 2}, ["beta", "alpha", "min_size"]),
        ("dirichlet", {}, ["alpha"]),
        ("dirichlet-clients", {"alpha": 1.0, "beta": 2}, ["beta", "alpha", "min_size"]),
        ("dirichlet-clients", {}, ["alpha"]),
        ("shards", {"shards_per_client": 2, "alpha": 1.0}, ["alpha", "shards_per_client"]),
        ("shards", {}, ["shards_per_client"]),
        ("by_group", {"min_size": 3}, ["min_size", "accepted: none"]),
    ],
)
def test_adapter_keyword_errors(name: str, kwargs: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        PARTITIONERS.get(name)(FIXED_LABELS, FIXED_LABELS % 5, 3, 0, **kwargs)
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------------------------------------
# argument errors name the argument

L = np.arange(20) % 4


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: iid(10, 0, 0), "num_clients"),
        (lambda: iid(-1, 1, 0), "n"),
        (lambda: iid(3, 4, 0), "num_clients"),
        (lambda: iid(10, True, 0), "num_clients"),
        (lambda: dirichlet(L, 0, 1.0, 0), "num_clients"),
        (lambda: dirichlet(L, 2, 0.0, 0), "alpha"),
        (lambda: dirichlet(L, 2, -1.0, 0), "alpha"),
        (lambda: dirichlet(L, 2, float("inf"), 0), "alpha"),
        (lambda: dirichlet(L, 2, "1", 0), "alpha"),
        (lambda: dirichlet(L, 2, 1.0, 0, min_size=0), "min_size"),
        (lambda: dirichlet(L, 3, 1.0, 0, min_size=7), "min_size"),
        (lambda: dirichlet(L.reshape(4, 5), 2, 1.0, 0), "labels"),
        (lambda: dirichlet(np.zeros(20), 10, 0.01, 0, min_size=2), "alpha"),
        (lambda: shards(L, 0, 2, 0), "num_clients"),
        (lambda: shards(L, 2, 0, 0), "shards_per_client"),
        (lambda: shards(L, 11, 2, 0), "shards_per_client"),
        (lambda: shards(L.reshape(4, 5), 2, 2, 0), "labels"),
        (lambda: by_group(L, 0, 0), "num_clients"),
        (lambda: by_group(L, 5, 0), "num_clients"),
        (lambda: by_group(L.reshape(4, 5), 2, 0), "groups"),
        (lambda: label_histogram(L, [np.arange(20)], 3), "num_classes"),
        (lambda: label_histogram(L, [np.arange(20)], 0), "num_classes"),
    ],
)
def test_errors_name_the_argument(call: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_dirichlet_exhausted_message_gives_the_fix() -> None:
    with pytest.raises(ValueError) as info:
        dirichlet(np.zeros(20, dtype=np.int64), 10, 0.01, 0, min_size=2)
    text = str(info.value)
    for word in ("alpha=0.01", "min_size=2", "num_clients=10", "raise alpha"):
        assert word in text


def test_by_group_too_few_groups_suggests_alternatives() -> None:
    with pytest.raises(ValueError, match="distinct groups.*dirichlet or iid"):
        by_group(np.array([1, 1, 2, 2]), 3, 0)
