"""Pure index partitioners: split a dataset's rows over federated clients.

Every partitioner maps labels (or group values) to one sorted ``int64`` index array per client.
They hold no state and see no dataset objects, so they are trivial to property-test.

* ``iid``: a seeded random equal split (sizes differ by at most 1).
* ``dirichlet``: label skew after Hsu, Qi and Brown, "Measuring the Effects of Non-Identical
  Data Distribution for Federated Visual Classification", 2019 (arXiv 1909.06335): for each
  class, client proportions are drawn from ``Dir(alpha * 1)``; small ``alpha`` gives each
  client few classes, large ``alpha`` approaches the global label mix.
* ``dirichlet-clients`` (in ``ilora.data.partition_clients``): the same paper's per-client
  reading, each client's class mix drawn from ``Dir(alpha * p)`` and all client sizes equal.
* ``shards``: the pathological non-IID split of McMahan et al., "Communication-Efficient
  Learning of Deep Networks from Decentralized Data", AISTATS 2017 (arXiv 1602.05629): sort by
  label, cut into equal shards, give each client ``shards_per_client`` random shards.
* ``by_group``: a natural split where each group value (a movie, a user) lives on one client.

``ilora.data.partitioners`` registers a thin adapter per name in ``PARTITIONERS``, so configs
and the CLI select a partitioner by name.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ilora.seeding import np_rng

IndexArray = npt.NDArray[np.int64]

_MAX_TRIES = 1000  # Dirichlet resampling budget before giving up with advice


# ---------------------------------------------------------------------------------------------
# validation helpers


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_1d(name: str, values: object) -> npt.NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _check_rows_and_clients(
    name: str, values: object, num_clients: object
) -> tuple[npt.NDArray[Any], int]:
    """Return the per-example ``values`` (1-D) and ``num_clients`` (an integer >= 1) checked."""
    return _check_1d(name, values), _check_int("num_clients", num_clients, 1)


def _check_enough_rows(n: int, needed: int, what: str) -> None:
    if n < needed:
        raise ValueError(
            f"n (number of examples) must be >= {what} = {needed}, got n={n}; "
            "lower num_clients or use more data"
        )


def _check_nonempty(parts: list[IndexArray], hint: str) -> list[IndexArray]:
    for cid, part in enumerate(parts):
        if part.size == 0:
            raise ValueError(f"client {cid} would have no examples; {hint}")
    return parts


def _sorted_parts(chunks: list[IndexArray]) -> list[IndexArray]:
    return [np.sort(c).astype(np.int64, copy=False) for c in chunks]


# ---------------------------------------------------------------------------------------------
# IID


def iid(n: int, num_clients: int, seed: int) -> list[IndexArray]:
    """Split ``range(n)`` uniformly at random into ``num_clients`` near-equal parts.

    Args:
        n: number of examples.
        num_clients: number of clients, ``1 <= num_clients <= n``.
        seed: run seed; the draw uses ``np_rng(seed, "iid")``.

    Returns:
        One sorted ``int64`` index array per client; sizes differ by at most 1.

    Raises:
        ValueError: if ``n`` or ``num_clients`` is out of range.

    """
    n = _check_int("n", n, 0)
    num_clients = _check_int("num_clients", num_clients, 1)
    _check_enough_rows(n, num_clients, "num_clients")
    perm = np_rng(seed, "iid").permutation(n).astype(np.int64)
    parts = _sorted_parts(np.array_split(perm, num_clients))
    return _check_nonempty(parts, "lower num_clients")


# ---------------------------------------------------------------------------------------------
# Dirichlet label skew (Hsu et al. 2019)


def dirichlet(
    labels: npt.NDArray[Any], num_clients: int, alpha: float, seed: int, min_size: int = 10
) -> list[IndexArray]:
    """Label-skewed split: per class, client shares are drawn from ``Dir(alpha * 1)``.

    Each class's indices, sorted ascending, are cut into consecutive runs whose lengths follow
    the drawn shares. Draws come from ``np_rng(seed, "dirichlet", attempt, class_value)``, so
    the split depends only on the labels' multiset per class and the within-class order: the
    client label histograms do not depend on row order. Whole draws are repeated (up to a
    fixed budget) until every client has at least ``min_size`` examples.

    Args:
        labels: 1-D array of class labels, one per example.
        num_clients: number of clients, ``>= 1``.
        alpha: Dirichlet concentration, ``> 0``; small is skewed, large approaches IID.
        seed: run seed.
        min_size: smallest allowed client size, ``>= 1``.

    Returns:
        One sorted ``int64`` index array per client.

    Raises:
        ValueError: if an argument is out of range, or no draw within the budget gives every
            client ``min_size`` examples.

    """
    labels, num_clients = _check_rows_and_clients("labels", labels, num_clients)
    min_size = _check_int("min_size", min_size, 1)
    alpha = _check_alpha(alpha)
    _check_enough_rows(labels.size, num_clients * min_size, "num_clients * min_size")
    keys, inverse = np.unique(labels, return_inverse=True)
    by_class = [np.flatnonzero(inverse == c).astype(np.int64) for c in range(keys.size)]
    counts = _draw_counts(by_class, [k.item() for k in keys], num_clients, alpha, seed, min_size)
    chunks: list[list[IndexArray]] = [[] for _ in range(num_clients)]
    for idx, row in zip(by_class, counts, strict=True):
        for cid, piece in enumerate(np.split(idx, np.cumsum(row)[:-1])):
            chunks[cid].append(piece)
    parts = _sorted_parts([np.concatenate(c) for c in chunks])
    return _check_nonempty(parts, "lower num_clients or raise alpha")


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.number):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    value = float(alpha)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return value


def _draw_counts(
    by_class: list[IndexArray],
    keys: list[object],
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int,
) -> npt.NDArray[np.int64]:
    """Return client counts per class ``(num_classes, num_clients)`` meeting ``min_size``.

    Each class's draw depends only on (seed, attempt, class value), never on row order.
    """
    sizes = [idx.size for idx in by_class]
    for attempt in range(_MAX_TRIES):
        counts = np.stack(
            [
                _class_counts(size, key, num_clients, alpha, seed, attempt)
                for key, size in zip(keys, sizes, strict=True)
            ]
        )  # (num_classes, num_clients)
        if counts.sum(axis=0).min() >= min_size:
            return counts
    raise ValueError(
        f"dirichlet: no draw in {_MAX_TRIES} tries gave each of num_clients={num_clients} "
        f"clients at least min_size={min_size} examples with alpha={alpha}; "
        "lower num_clients or min_size, or raise alpha"
    )


def _class_counts(
    size: int, key: object, num_clients: int, alpha: float, seed: int, attempt: int
) -> IndexArray:
    props = np_rng(seed, "dirichlet", attempt, key).dirichlet(np.full(num_clients, alpha))
    cuts = np.minimum((np.cumsum(props)[:-1] * size).astype(np.int64), size)  # (num_clients-1,)
    bounds = np.concatenate(([0], np.maximum.accumulate(cuts), [size])).astype(np.int64)
    return np.diff(bounds)  # (num_clients,)


# ---------------------------------------------------------------------------------------------
# Shards (McMahan et al. 2017)


def shards(
    labels: npt.NDArray[Any], num_clients: int, shards_per_client: int, seed: int
) -> list[IndexArray]:
    """Pathological non-IID split: each client gets ``shards_per_client`` label-sorted shards.

    Indices are sorted by label (ties by index), cut into ``num_clients * shards_per_client``
    near-equal shards, and the shards are dealt to clients by a seeded permutation, so each
    client sees about ``shards_per_client`` classes.

    Args:
        labels: 1-D array of class labels, one per example.
        num_clients: number of clients, ``>= 1``.
        shards_per_client: shards per client, ``>= 1``.
        seed: run seed; the deal uses ``np_rng(seed, "shards")``.

    Returns:
        One sorted ``int64`` index array per client.

    Raises:
        ValueError: if an argument is out of range or there are fewer examples than shards.

    """
    labels, num_clients = _check_rows_and_clients("labels", labels, num_clients)
    shards_per_client = _check_int("shards_per_client", shards_per_client, 1)
    num_shards = num_clients * shards_per_client
    _check_enough_rows(labels.size, num_shards, "num_clients * shards_per_client")
    order = np.argsort(labels, kind="stable").astype(np.int64)  # (n,) label-sorted indices
    pieces = np.array_split(order, num_shards)
    deal = np_rng(seed, "shards").permutation(num_shards).reshape(num_clients, shards_per_client)
    parts = _sorted_parts([np.concatenate([pieces[s] for s in row]) for row in deal])
    return _check_nonempty(parts, "lower num_clients or shards_per_client")


# ---------------------------------------------------------------------------------------------
# Natural groups


def by_group(groups: npt.NDArray[Any], num_clients: int, seed: int) -> list[IndexArray]:
    """Natural split: every group value goes wholly to one client, balancing client sizes.

    Groups are shuffled with ``np_rng(seed, "by_group")`` (the seeded tie-break), stably sorted
    largest first, and each is given to the currently smallest client (lowest id on ties).
    Client sizes then differ by at most the largest group's size.

    Args:
        groups: 1-D array of group values (e.g. movie names), one per example.
        num_clients: number of clients, ``1 <= num_clients <= number of distinct groups``.
        seed: run seed.

    Returns:
        One sorted ``int64`` index array per client.

    Raises:
        ValueError: if an argument is out of range or there are fewer groups than clients.

    """
    groups, num_clients = _check_rows_and_clients("groups", groups, num_clients)
    _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if sizes.size < num_clients:
        raise ValueError(
            f"num_clients must be <= the number of distinct groups ({sizes.size}), got "
            f"{num_clients}; lower num_clients or use a partitioner such as dirichlet or iid"
        )
    owner = _assign_groups(sizes.astype(np.int64), num_clients, seed)  # (num_groups,)
    client_of_row = owner[inverse.reshape(-1)]  # (n,)
    parts = [np.flatnonzero(client_of_row == cid).astype(np.int64) for cid in range(num_clients)]
    return _check_nonempty(parts, "lower num_clients")


def _assign_groups(sizes: IndexArray, num_clients: int, seed: int) -> IndexArray:
    """Greedy largest-first assignment of groups to the smallest client; returns group owners."""
    shuffled = np_rng(seed, "by_group").permutation(sizes.size)
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]  # largest first, seeded ties
    heap = [(0, cid) for cid in range(num_clients)]  # (load, client id)
    owner = np.empty(sizes.size, dtype=np.int64)
    for g in order:
        load, cid = heapq.heappop(heap)
        owner[g] = cid
        heapq.heappush(heap, (load + int(sizes[g]), cid))
    return owner


# ---------------------------------------------------------------------------------------------
# Inspection


def label_histogram(
    labels: npt.NDArray[Any], parts: list[IndexArray], num_classes: int
) -> npt.NDArray[np.int64]:
    """Count each client's examples per class.

    Args:
        labels: 1-D integer labels in ``[0, num_classes)``.
        parts: one index array per client.
        num_classes: number of classes, ``>= 1``.

    Returns:
        Array of shape ``(num_clients, num_classes)``.

    Raises:
        ValueError: if ``num_classes`` is out of range or a label falls outside it.

    """
    labels = _check_1d("labels", labels)
    num_classes = _check_int("num_classes", num_classes, 1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}), "
            f"got range [{labels.min()}, {labels.max()}]"
        )
    hist = np.zeros((len(parts), num_classes), dtype=np.int64)
    for cid, part in enumerate(parts):
        hist[cid] = np.bincount(labels[part].astype(np.int64), minlength=num_classes)
    return hist
