"""Client sampling shared by both runtimes, so they pick the same clients every round.

The sampling seed is the config's ``seed``, except in a DP run with noise (and without
``dp.reproducible_noise``): there it is a secret drawn from OS entropy by the server
(:func:`sampling_seed`), kept in its checkpoints and never written to ``config.yaml`` or sent to
a client, since the accountant's amplification by subsampling assumes nobody else knows who
was sampled (``engine.privacy``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from ilora.config import ExperimentConfig
from ilora.seeding import np_rng


def private_sampling(cfg: ExperimentConfig) -> bool:
    """Return True when ``cfg``'s sampling must be secret (DP noise, not reproducible)."""
    dp = cfg.dp
    return dp.enabled and dp.noise_multiplier > 0 and not dp.reproducible_noise


def sampling_seed(cfg: ExperimentConfig, kept: int | None = None) -> int:
    """Return the run's sampling seed: ``kept`` (from a checkpoint), a secret, or ``cfg.seed``."""
    if kept is not None:
        return kept
    return secrets.randbits(63) if private_sampling(cfg) else cfg.seed


def published_events(cfg: ExperimentConfig, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return a round's events as its record keeps them: without ``cid`` under private sampling.

    An event names a sampled client; under private sampling the record keeps only the outcome,
    reason and fault, so that ``history.jsonl`` and ``failure.txt`` do not reveal the sample.
    """
    if not private_sampling(cfg):
        return events
    return [{k: v for k, v in e.items() if k != "cid"} for e in events]


def num_sampled(num_clients: int, fraction: float) -> int:
    """Return how many clients a round samples: ``max(1, round(fraction · N))``."""
    return max(1, min(num_clients, round(fraction * num_clients)))


def sample_clients(cids: Sequence[int], fraction: float, seed: int, rnd: int) -> list[int]:
    """Return the sorted ids sampled in round ``rnd`` (a seeded draw without replacement).

    ``cids`` may be a ``range`` (already sorted: the draw then costs O(sampled), not O(N)).
    """
    ordered = cids if isinstance(cids, range) and cids.step > 0 else sorted(cids)
    m = num_sampled(len(ordered), fraction)
    if m == len(ordered):
        return list(ordered)
    picked = np_rng(seed, "sample", rnd).choice(len(ordered), size=m, replace=False)
    return sorted(ordered[int(i)] for i in picked)
