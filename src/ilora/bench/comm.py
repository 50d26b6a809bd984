"""Analytic communication of whole rounds and runs, from each algorithm's declared formula.

The per-client formulas live beside the algorithms (:mod:`ilora.algorithms.traffic`, one
``@traffic.formula`` at the end of each algorithm module); this module sums them over the
clients the engine's seeded sampler draws. ``tests/engine/test_communication.py`` and
``ilora bench comm`` compare these sums with the engine's measured ``bytes_down``/``bytes_up``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.traffic import FLOAT32
from ilora.algorithms.traffic import Contact
from ilora.algorithms.traffic import Shapes
from ilora.algorithms.traffic import formula_of


def client_bytes(algorithm: str, shapes: Shapes, contact: Contact) -> tuple[int, int]:
    """Return ``(download, upload)`` bytes of one client in one round.

    ``contact.hp`` is read on top of the algorithm's registered preset (``ilora-s``).

    Raises:
        UnknownNameError: for an unregistered algorithm.
        LookupError: if its class declares no formula.

    """
    f = formula_of(ALGORITHMS.get(algorithm))
    hp = {**ALGORITHMS.preset(algorithm), **contact.hp}
    down, up = f(shapes, Contact(contact.rank, contact.round, contact.first, contact.max_rank, hp))
    return FLOAT32 * down, FLOAT32 * up


def round_bytes(
    algorithm: str,
    shapes: Shapes,
    ranks: Mapping[int, int],
    sampled: Sequence[int],
    rnd: int,
    seen: set[int],
    hp: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """Return ``(download, upload)`` bytes of a round summed over the ``sampled`` client ids.

    ``ranks`` maps client id to rank; ``seen`` holds the clients sampled in earlier rounds and
    is updated in place.
    """
    down = up = 0
    for cid in sampled:
        contact = Contact(ranks[cid], rnd, cid not in seen, max(ranks.values()), hp or {})
        d, u = client_bytes(algorithm, shapes, contact)
        down, up = down + d, up + u
    seen.update(sampled)
    return down, up


def run_bytes(
    algorithm: str,
    shapes: Shapes,
    ranks: Mapping[int, int],
    fraction: float,
    seed: int,
    rounds: int,
    pooled: bool = False,
    hp: Mapping[str, Any] | None = None,
    round_hp: Sequence[Mapping[str, Any]] | None = None,
) -> list[tuple[int, int]]:
    """Return the analytic ``(download, upload)`` bytes of every round of a run.

    The clients of each round are drawn with the engine's seeded sampler; a ``pooled`` run
    (centralized) has one client (id 0) at the largest rank, sampled every round. ``hp``: the
    algorithm's hyperparameters; ``round_hp``: per round, what the run reported (its metrics).
    """
    from ilora.engine.sampling import sample_clients

    if pooled:
        ranks, fraction = {0: max(ranks.values())}, 1.0
    seen: set[int] = set()
    out = []
    for r in range(1, rounds + 1):
        sampled = sample_clients(sorted(ranks), fraction, seed, r)
        this = {**(hp or {}), **(round_hp[r - 1] if round_hp else {})}
        out.append(round_bytes(algorithm, shapes, ranks, sampled, r, seen, this))
    return out


def sample_free(
    algorithm: str,
    shapes: Shapes,
    ranks: Mapping[int, int],
    rounds: int,
    hp: Mapping[str, Any] | None = None,
    round_hp: Sequence[Mapping[str, Any]] | None = None,
) -> bool:
    """Return True when no round's bytes depend on which clients it sampled, only how many.

    That holds when, in every round, every client costs the same whatever its rank and
    whether it was sampled before: then :func:`run_bytes` is right for any sample of the
    recorded size, a secret one included (``engine.sampling.private_sampling``).
    """
    top = max(ranks.values())
    for r in range(1, rounds + 1):
        this = {**(hp or {}), **(round_hp[r - 1] if round_hp else {})}
        costs = {
            client_bytes(algorithm, shapes, Contact(rank, r, first, top, this))
            for rank in set(ranks.values())
            for first in (True, False)
        }
        if len(costs) > 1:
            return False
    return True
