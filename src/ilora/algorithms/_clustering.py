"""Clustering for the methods that group clients (FL-TAC, FedLEASE).

K-means with k-means++ init, best of several starts (FL-TAC), and average-linkage
agglomerative clustering with the silhouette score on cosine distances of B (FedLEASE). Small
deterministic implementations (no scipy/scikit-learn): ties are broken by index; random choices
come from the generator passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

KMEANS_ITERATIONS = 100
COS_EPS = 1e-8  # FedLEASE's code: a zero B is at distance 1 from everything


def kmeans(X: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Return K-means cluster labels ``(n,)`` of the rows of ``X (n, D)``.

    k-means++ init from ``g``, then Lloyd iterations until the assignment is stable (at most
    ``KMEANS_ITERATIONS``); ties go to the lower cluster index; an empty cluster keeps its
    centre. Labels are renumbered in order of first appearance (row 0 is in cluster 0).
    """
    import torch

    X = X.to(torch.float64)
    centers = kmeans_pp_init(X, k, g)  # (k, D)
    labels = squared_distances(X, centers).argmin(dim=1)  # (n,)
    for _ in range(KMEANS_ITERATIONS):
        for j in range(k):
            members = labels == j
            if bool(members.any()):
                centers[j] = X[members].mean(dim=0)
        new = squared_distances(X, centers).argmin(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
    first_seen = {int(j): None for j in labels.tolist()}  # insertion order = first appearance
    renumber = {j: i for i, j in enumerate(first_seen)}
    return torch.tensor([renumber[int(j)] for j in labels.tolist()], dtype=torch.int64)


def kmeans_best_of(X: torch.Tensor, k: int, g: torch.Generator, starts: int) -> torch.Tensor:
    """Return the labels of the lowest-cost of ``starts`` :func:`kmeans` runs (``n_init``).

    The runs draw their k-means++ inits one after the other from ``g`` (the first run is
    ``kmeans(X, k, g)`` with the same generator state); the cost is the within-cluster sum of
    squares :func:`kmeans_cost`; ties keep the earlier run.
    """
    best: tuple[float, torch.Tensor] | None = None
    for _ in range(starts):
        labels = kmeans(X, k, g)
        cost = kmeans_cost(X, labels)
        if best is None or cost < best[0]:
            best = (cost, labels)
    assert best is not None, "starts must be >= 1"
    return best[1]


def kmeans_cost(X: torch.Tensor, labels: torch.Tensor) -> float:
    """Return ``Σ_i ‖x_i − μ_{label_i}‖²`` (float64), ``μ_j`` the mean of cluster ``j``."""
    import torch

    X = X.to(torch.float64)
    total = 0.0
    for j in sorted(set(labels.tolist())):
        members = X[labels == j]  # (n_j, D)
        total += float((members - members.mean(dim=0)).square().sum())
    return total


def kmeans_pp_init(X: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Return ``k`` initial centres ``(k, D)`` chosen by k-means++ from the rows of ``X``.

    The first row is drawn uniformly, each next one with probability ``∝`` its squared distance
    to the nearest chosen centre; if every row coincides with a centre, the lowest unchosen row.
    """
    import torch

    n = X.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=g))]
    d2 = (X - X[chosen[0]]).square().sum(dim=1)  # (n,)
    while len(chosen) < k:
        total = float(d2.sum())
        if total > 0:
            nxt = int(torch.multinomial(d2 / total, 1, generator=g))
        else:
            nxt = next(i for i in range(n) if i not in chosen)
        chosen.append(nxt)
        d2 = torch.minimum(d2, (X - X[nxt]).square().sum(dim=1))
    return X[chosen].clone()


def squared_distances(X: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Return ``‖x_i − c_j‖²`` ``(n, k)`` (one pass per centre; no ``(n, k, D)`` tensor)."""
    import torch

    return torch.stack([(X - c).square().sum(dim=1) for c in centers], dim=1)


def b_distances(Bs: Sequence[Sequence[torch.Tensor]]) -> np.ndarray:
    """Return ``D (n, n)``: ``D_ij = mean_l (1 − cos(vec B_i^l, vec B_j^l))``, ``D_ii = 0``.

    ``Bs[i][l]`` is client ``i``'s B of layer ``l``; ``cos = ⟨b_i, b_j⟩ / (‖b_i‖‖b_j‖ + 1e-8)``.
    """
    n, L = len(Bs), len(Bs[0])
    D = np.zeros((n, n))
    for layer in range(L):
        X = np.stack([np.asarray(b[layer], dtype=np.float64).ravel() for b in Bs])  # (n, d)
        norms = np.linalg.norm(X, axis=1)  # (n,)
        cos = (X @ X.T) / (np.outer(norms, norms) + COS_EPS)  # (n, d) @ (d, n) -> (n, n)
        D += (1.0 - cos) / L
    D = (D + D.T) / 2
    np.fill_diagonal(D, 0.0)
    return D


def average_linkage(D: np.ndarray, num_clusters: int) -> list[int]:
    """Return cluster labels of agglomerative clustering with average linkage on distances ``D``.

    Start from singletons; merge the two clusters with the smallest mean pairwise distance
    until ``num_clusters`` remain (ties: the first pair in client order). Labels number the
    clusters by their smallest member (client 0 is in cluster 0).
    """
    clusters = [[i] for i in range(D.shape[0])]
    while len(clusters) > num_clusters:
        best = (math.inf, 0, 1)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                d = float(D[np.ix_(clusters[a], clusters[b])].mean())
                if d < best[0]:
                    best = (d, a, b)
        _, a, b = best
        clusters[a] = sorted(clusters[a] + clusters.pop(b))  # keeps clusters ordered by min
    labels = [0] * D.shape[0]
    for label, members in enumerate(clusters):
        for i in members:
            labels[i] = label
    return labels


def silhouette(D: np.ndarray, labels: Sequence[int]) -> float:
    """Return the mean silhouette ``(b_i − a_i) / max(a_i, b_i)`` (0 for singleton clusters)."""
    lab = np.asarray(labels)
    scores = []
    for i in range(len(lab)):
        mates = (lab == lab[i]) & (np.arange(len(lab)) != i)
        if not mates.any():
            scores.append(0.0)
            continue
        a = D[i, mates].mean()
        b = min(D[i, lab == other].mean() for other in set(lab.tolist()) if other != lab[i])
        top = max(a, b)
        scores.append(0.0 if top == 0 else (b - a) / top)
    return float(np.mean(scores))


def choose_clusters(D: np.ndarray, max_experts: int) -> list[int]:
    """Return the labels of the ``M`` in ``2..min(max_experts, n − 1)`` with the best silhouette.

    Ties go to the smallest ``M``; with ``n <= 2`` clients every client is its own cluster.
    """
    n = D.shape[0]
    if n <= 2:
        return list(range(n))
    best: tuple[float, list[int]] | None = None
    for M in range(2, min(max_experts, n - 1) + 1):
        labels = average_linkage(D, M)
        score = silhouette(D, labels)
        if best is None or score > best[0]:
            best = (score, labels)
    assert best is not None
    return best[1]
