"""Analytic communication per client per round: the reference the engine's byte counts meet.

Each algorithm's protocol, written once here from its paper (and the "Bytes per client per
round" paragraph of its docstring), independently of its hooks: what a client of rank ``r``
downloads and uploads in one round, in float32 bytes. ``tests/engine/test_communication.py``
checks the engine's measured ``bytes_up``/``bytes_down`` against these for every registered
algorithm; a new algorithm must add its formula here.

Per adapted layer ``(d_out, d_in)``: a factor pair at rank ``r`` is ``r·(d_out + d_in)`` floats,
B alone ``d_out·r``, A alone ``r·d_in``, a dense update ``d_out·d_in``; ``n_head`` is the number
of trainable head floats (classifier), 0 when the head is frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ilora.lora import keys

FLOAT32 = 4


@dataclass(frozen=True)
class Shapes:
    """The model as far as communication goes: adapted layers ``(d_out, d_in)`` and the head."""

    layers: Sequence[tuple[int, int]]
    n_head: int

    def pair(self, r: int) -> int:
        """Floats of one (B, A) pair per layer at rank ``r``."""
        return sum(r * (d_out + d_in) for d_out, d_in in self.layers)

    def b_only(self, r: int) -> int:
        return sum(d_out * r for d_out, _ in self.layers)

    def a_only(self, r: int) -> int:
        return sum(r * d_in for _, d_in in self.layers)

    def dense(self) -> int:
        return sum(d_out * d_in for d_out, d_in in self.layers)


@dataclass(frozen=True)
class Contact:
    """One client in one round: its rank, the round, and whether it was ever sampled before."""

    rank: int
    round: int
    first: bool


def shapes_of(template: Mapping[str, torch.Tensor], train_head: bool) -> Shapes:
    """Return the :class:`Shapes` of a model's template (``<module>.base`` weights and head)."""
    base = keys.of_kind(template, "base")
    head = keys.of_kind(template, "param") if train_head else {}
    layers = [(int(t.shape[0]), int(t.shape[1])) for t in base.values()]  # (d_out, d_in)
    return Shapes(layers, sum(t.numel() for t in head.values()))


Formula = Callable[[Shapes, Contact], tuple[int, int]]  # -> (down, up) in floats


def _pair_both_ways(s: Shapes, c: Contact) -> tuple[int, int]:
    return s.pair(c.rank) + s.n_head, s.pair(c.rank) + s.n_head


def _ilora(s: Shapes, c: Contact) -> tuple[int, int]:
    # round 1: only the head; clients build the same QR init themselves
    down = s.n_head if c.round == 1 else s.pair(c.rank) + s.n_head
    return down, s.pair(c.rank) + s.n_head


def _ilora_s(s: Shapes, c: Contact) -> tuple[int, int]:
    down, up = _ilora(s, c)
    control = s.pair(c.rank) + s.n_head  # c at the client's rank down, Δc_k up
    return down + control, up + control


def _ffa_lora(s: Shapes, c: Contact) -> tuple[int, int]:
    return s.b_only(c.rank) + s.n_head, s.b_only(c.rank) + s.n_head


def _flora(s: Shapes, c: Contact) -> tuple[int, int]:
    return s.dense() + s.n_head, s.pair(c.rank) + s.n_head


def _fedex_lora(s: Shapes, c: Contact) -> tuple[int, int]:
    return s.pair(c.rank) + s.dense() + s.n_head, s.pair(c.rank) + s.n_head


def _fedsa_lora(s: Shapes, c: Contact) -> tuple[int, int]:
    first = s.b_only(c.rank) + s.n_head if c.first else 0  # its starting B and head, once
    return s.a_only(c.rank) + first, s.a_only(c.rank)


FORMULAS: Mapping[str, Formula] = {
    "centralized": _pair_both_ways,  # the one pooled client at the largest rank
    "fedit": _pair_both_ways,
    "flexlora": _pair_both_ways,
    "lora-fair": _pair_both_ways,
    "hetlora": _pair_both_ways,  # upload at r_k until self-pruning shrinks it
    "ilora": _ilora,
    "ilora-s": _ilora_s,
    "ffa-lora": _ffa_lora,
    "flora": _flora,
    "fedex-lora": _fedex_lora,
    "fedsa-lora": _fedsa_lora,
}


def client_bytes(algorithm: str, shapes: Shapes, contact: Contact) -> tuple[int, int]:
    """Return ``(download, upload)`` bytes of one client in one round.

    Raises:
        KeyError: if ``algorithm`` has no formula here.

    """
    down, up = FORMULAS[algorithm](shapes, contact)
    return FLOAT32 * down, FLOAT32 * up


def round_bytes(
    algorithm: str,
    shapes: Shapes,
    ranks: Mapping[int, int],
    sampled: Sequence[int],
    rnd: int,
    seen: set[int],
) -> tuple[int, int]:
    """Return ``(download, upload)`` bytes of a round summed over the ``sampled`` client ids.

    ``ranks`` maps client id to rank; ``seen`` holds the clients sampled in earlier rounds and
    is updated in place.
    """
    down = up = 0
    for cid in sampled:
        d, u = client_bytes(algorithm, shapes, Contact(ranks[cid], rnd, cid not in seen))
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
) -> list[tuple[int, int]]:
    """Return the analytic ``(download, upload)`` bytes of every round of a run.

    The clients of each round are drawn with the engine's seeded sampler; a ``pooled`` run
    (centralized) has one client (id 0) at the largest rank, sampled every round.
    """
    from ilora.engine.sampling import sample_clients

    if pooled:
        ranks, fraction = {0: max(ranks.values())}, 1.0
    seen: set[int] = set()
    out = []
    for r in range(1, rounds + 1):
        sampled = sample_clients(sorted(ranks), fraction, seed, r)
        out.append(round_bytes(algorithm, shapes, ranks, sampled, r, seen))
    return out
