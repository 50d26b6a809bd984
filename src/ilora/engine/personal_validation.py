"""Each client's personal validation share: held-out examples drawn with the client's label mix.

A personalized method is chosen on its clients' accuracy on their own distribution. Under
``eval.split: validation`` the clients' test shares must not be read, and a share carved from
a client's training examples would change what every method trains on. Instead client ``k``
gets ``m_k`` examples of the held-out validation split (``data.validation_fraction``, removed
before the partition, so disjoint from every training and test share), drawn per class in the
proportions of the client's own examples:

    m_k = |client k's test share|,   m_kc ≈ m_k · n_kc / n_k   (largest remainders, Σ_c m_kc = m_k)

where ``n_kc`` counts client ``k``'s examples of class ``c``. For a label-skew partition
(``iid``, ``dirichlet``, ``shards``) a client's distribution is the task's class-conditional
distribution reweighted by ``n_kc / n_k``, so the draw has the client's distribution. A
``by_group`` partition skews features as well, which a label mix cannot reproduce: the config
loader refuses it (``config.loading.check_personal_validation``). Draws are without
replacement within a client (with replacement only for a class the validation split holds too
few of) and seeded by the run seed and the client id; different
clients may share validation examples. :func:`local_evals` gives ``setup.build`` the test shares
or, on validation, these shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ilora.config import ConfigError
from ilora.config import ExperimentConfig
from ilora.engine.shares import Shares
from ilora.seeding import np_rng
from ilora.tasks.base import TaskData

if TYPE_CHECKING:
    import numpy as np


def class_quota(counts: np.ndarray, total: int) -> np.ndarray:
    """Return per-class draws summing to ``total`` in the proportions of ``counts``.

    Largest-remainder rounding of ``total · counts / Σ counts``; ``(C,) -> (C,)`` int64.
    """
    import numpy as np

    weights = np.asarray(counts, dtype=np.float64)
    if total == 0 or weights.sum() == 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = total * weights / weights.sum()
    quota: np.ndarray = np.floor(exact).astype(np.int64)
    short = total - int(quota.sum())
    order = np.argsort(-(exact - quota), kind="stable")  # largest remainders first
    quota[order[:short]] += 1
    return quota


def draw_share(pool_labels: np.ndarray, quota: np.ndarray, seed: int, cid: int) -> np.ndarray:
    """Return sorted indices into the pool with ``quota[c]`` examples of each class ``c``."""
    import numpy as np

    rng = np_rng(seed, "personal-validation", cid)
    picked = []
    for c in np.flatnonzero(quota):
        members = np.flatnonzero(pool_labels == c)
        if len(members) == 0:
            raise ConfigError(
                f"client {cid} holds class {int(c)}, which the validation split lacks; "
                "raise data.validation_fraction"
            )
        need = int(quota[c])
        picked.append(rng.choice(members, size=need, replace=need > len(members)))
    out: np.ndarray = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *picked]))
    return out


def personal_validation(
    pool_labels: np.ndarray,
    client_labels: Sequence[np.ndarray],
    sizes: Sequence[int],
    num_classes: int,
    seed: int,
) -> list[np.ndarray]:
    """Return each client's validation indices into the pool (see the module).

    Args:
        pool_labels: ``(V,)`` labels of the held-out validation split.
        client_labels: client ``k``'s labels, all its examples (training and test share).
        sizes: ``m_k``, the number of examples to draw for client ``k``.
        num_classes: ``C``.
        seed: the run seed.

    """
    import numpy as np

    return [
        draw_share(pool_labels, class_quota(np.bincount(labels, minlength=num_classes), m), seed, k)
        for k, (labels, m) in enumerate(zip(client_labels, sizes, strict=True))
    ]


def local_evals(
    cfg: ExperimentConfig,
    data: TaskData,
    parts: Sequence[np.ndarray],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
) -> Shares:
    """Return what each client's own model is evaluated on.

    Its test share; on validation (``eval.split: validation``) a share of the held-out split
    with its label mix (:mod:`ilora.engine.personal_validation`), so no test share is read.
    """
    if cfg.eval.split != "validation" or cfg.data.local_test_fraction == 0.0:
        return Shares(data.train, [test for _, test in splits])
    labels = data.train.labels.numpy()
    drawn = personal_validation(
        data.test.labels.numpy(),
        [labels[idx] for idx in parts],
        [len(test) for _, test in splits],
        data.num_classes,
        cfg.seed,
    )
    return Shares(data.test, drawn)
