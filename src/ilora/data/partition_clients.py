"""Per-client Dirichlet label skew with equal client sizes (Hsu, Qi and Brown 2019).

Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification", 2019 (arXiv 1909.06335), section 3: every client ``k`` draws its class
proportions ``q_k ~ Dir(alpha * p)``, ``p`` the prior class distribution (here the classes'
shares of ``labels``), and then its examples from ``q_k``; every client holds the same number
of examples. ``ilora.data.partition.dirichlet`` is the other common reading (per class, client
shares from ``Dir(alpha * 1)``), which cannot give 20 clients enough examples when there are
only two classes and ``alpha`` is small; this one always can.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ilora.data.partition import IndexArray
from ilora.data.partition import _check_alpha
from ilora.data.partition import _check_int
from ilora.data.partition import _check_rows_and_clients
from ilora.data.partition import _sorted_parts
from ilora.seeding import np_rng

NAME = "dirichlet-clients"


def dirichlet_clients(
    labels: npt.NDArray[Any], num_clients: int, alpha: float, seed: int, min_size: int = 1
) -> list[IndexArray]:
    """Label-skewed split: client ``k``'s class mix is ``q_k ~ Dir(alpha * p)``, sizes equal.

    Every client gets ``size = n // num_clients`` examples; the ``n % num_clients`` rows left
    over at the end are dropped (used by no client), so sizes are exactly equal. Examples are
    drawn without replacement, one per client in turn (client 0, 1, ..., then again), so a
    class running out affects all clients alike: each draw picks a class from the client's
    ``q_k`` renormalized over the classes that still have examples (if ``q_k`` puts no mass on
    any of them, in proportion to the examples left per class), then takes that class's next
    row in a seeded order.

    Draws come from ``np_rng(seed, "dirichlet-clients", ...)``: ``"mix", k`` for ``q_k``,
    ``"draws"`` for the class choices, ``"rows", class_value`` for each class's row order.
    So the split depends only on the labels' multiset per class and the within-class order:
    the client label histograms do not depend on row order.

    Args:
        labels: 1-D array of class labels, one per example.
        num_clients: number of clients, ``>= 1``.
        alpha: Dirichlet concentration, ``> 0``; small is skewed, large approaches the prior.
        seed: run seed.
        min_size: smallest allowed client size ``n // num_clients``, ``>= 1``.

    Returns:
        One sorted ``int64`` index array per client, all of length ``n // num_clients``.

    Raises:
        ValueError: if an argument is out of range or ``n // num_clients < min_size``.

    """
    labels, num_clients = _check_rows_and_clients("labels", labels, num_clients)
    alpha = _check_alpha(alpha)
    min_size = _check_int("min_size", min_size, 1)
    size = labels.size // num_clients
    if size < min_size:
        raise ValueError(
            f"{NAME}: n // num_clients = {labels.size} // {num_clients} = {size} examples per "
            f"client is below min_size={min_size}; lower num_clients or min_size, or use more data"
        )
    keys, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    prior = counts / labels.size  # (num_classes,)
    mixes = np.stack(
        [np_rng(seed, NAME, "mix", cid).dirichlet(alpha * prior) for cid in range(num_clients)]
    )  # (num_clients, num_classes)
    uniforms = np_rng(seed, NAME, "draws").random((size, num_clients))
    classes = _draw_classes(mixes, counts.astype(np.int64), uniforms)  # (size, num_clients)
    return _take_rows(inverse.reshape(-1), [k.item() for k in keys], classes, seed)


def _take_rows(
    inverse: IndexArray, keys: list[object], classes: IndexArray, seed: int
) -> list[IndexArray]:
    """Give each draw of class ``c`` (in draw order) the next row of ``c``'s seeded order."""
    num_clients = classes.shape[1]
    chunks: list[list[IndexArray]] = [[] for _ in range(num_clients)]
    for c, key in enumerate(keys):
        rows = np.flatnonzero(inverse == c).astype(np.int64)
        rows = rows[np_rng(seed, NAME, "rows", key).permutation(rows.size)]
        takers = np.flatnonzero(classes.reshape(-1) == c) % num_clients  # client of each draw
        for cid in range(num_clients):
            chunks[cid].append(rows[: takers.size][takers == cid])
    return _sorted_parts([np.concatenate(c) for c in chunks])


def _draw_classes(
    mixes: npt.NDArray[np.float64], counts: IndexArray, uniforms: npt.NDArray[np.float64]
) -> IndexArray:
    """Return the class of every draw ``(size, num_clients)``, without replacement.

    Draw ``(t, k)`` is client ``k``'s ``t``-th; draws run ``t``-major. Its class is the one
    whose cumulative weight first exceeds ``uniforms[t, k]`` times the total weight.
    """
    remaining = counts.copy()  # (num_classes,)
    classes = np.empty(uniforms.shape, dtype=np.int64)
    for t, k in np.ndindex(*uniforms.shape):
        weights = np.where(remaining > 0, mixes[k], 0.0)
        if not weights.sum() > 0:
            weights = remaining.astype(np.float64)
        cumulative = np.cumsum(weights)
        c = int(np.searchsorted(cumulative, uniforms[t, k] * cumulative[-1], side="right"))
        c = min(c, int(np.flatnonzero(weights > 0)[-1]))  # rounding at the top end
        classes[t, k] = c
        remaining[c] -= 1
    return classes
