"""Client sampling shared by both runtimes, so they pick the same clients every round."""

from __future__ import annotations

from collections.abc import Sequence

from ilora.seeding import np_rng


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
