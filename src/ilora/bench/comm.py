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
from dataclasses import dataclass, field
from typing import Any

import torch

from ilora.lora import keys

FLOAT32 = 4


@dataclass(frozen=True)
class Shapes:
    """The model as far as communication goes: adapted layers ``(d_out, d_in)`` and the head."""

    layers: Sequence[tuple[int, int]]
    n_head: int
    head_io: tuple[int, int] = (0, 0)  # (input width d, classes) of the head, trained or not

    def pair(self, r: int) -> int:
        """Floats of one (B, A) pair per layer at rank ``r``."""
        return sum(r * (d_out + d_in) for d_out, d_in in self.layers)

    def b_only(self, r: int) -> int:
        return sum(d_out * r for d_out, _ in self.layers)

    def a_only(self, r: int) -> int:
        return sum(r * d_in for _, d_in in self.layers)

    def dense(self) -> int:
        return sum(d_out * d_in for d_out, d_in in self.layers)

    def core(self, r: int) -> int:
        """Floats of one ``(r, r)`` core per layer (tri-matrix LoRA's C)."""
        return len(self.layers) * r * r

    def class_stats(self) -> int:
        """Floats of per-class feature statistics: count, mean and variance of the head input."""
        d, classes = self.head_io
        return classes * (2 * d + 1)


@dataclass(frozen=True)
class Contact:
    """One client in one round: its rank, the round, and whether it was ever sampled before.

    ``max_rank`` is the largest client rank of the run (where global factors live at ``r_max``).
    """

    rank: int
    round: int
    first: bool
    max_rank: int = 0
    hp: Mapping[str, Any] = field(default_factory=dict)  # hyperparameters, observed M, ...


def shapes_of(template: Mapping[str, torch.Tensor], train_head: bool) -> Shapes:
    """Return the :class:`Shapes` of a model's template (``<module>.base`` weights and head)."""
    base = keys.of_kind(template, "base")
    head = keys.of_kind(template, "param") if train_head else {}
    layers = [(int(t.shape[0]), int(t.shape[1])) for t in base.values()]  # (d_out, d_in)
    return Shapes(layers, sum(t.numel() for t in head.values()), _head_io(template))


def _head_io(template: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Return ``(d, classes)`` of the head: first 2-D weight's input, last one's output width.

    ``(0, 0)`` when the head has no 2-D weight.
    """
    mats = [t for t in keys.of_kind(template, "param").values() if t.dim() == 2]
    return (int(mats[0].shape[1]), int(mats[-1].shape[0])) if mats else (0, 0)


Formula = Callable[[Shapes, Contact], tuple[int, int]]  # -> (down, up) in floats


def _pair_both_ways(s: Shapes, c: Contact) -> tuple[int, int]:
    return s.pair(c.rank) + s.n_head, s.pair(c.rank) + s.n_head


def _hetlora(s: Shapes, c: Contact) -> tuple[int, int]:
    # down at r_k; up at the client's current rank: r_k until self-pruning shrinks it. A run's
    # ``upload_rank_mean`` (reported per round) gives the round's total exactly (linear in r).
    up = c.hp.get("upload_rank_mean", c.rank)
    return s.pair(c.rank) + s.n_head, s.pair(up) + s.n_head


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


def _fedloru(s: Shapes, c: Contact) -> tuple[int, int]:
    # B, A at r_k and the dense merged residual down (stateless clients), B and A up
    return s.pair(c.rank) + s.dense() + s.n_head, s.pair(c.rank) + s.n_head


def _mfedloru(s: Shapes, c: Contact) -> tuple[int, int]:
    # the global B, A at r_max and the residual down; the nested factors P^B, Q^B, P^A, Q^A up
    # (r·(d_out + d_in + 2 r_max) per layer), or B, A when the client is at r_max
    R = c.max_rank
    down = s.pair(R) + s.dense() + s.n_head
    if c.rank >= R:
        return down, s.pair(R) + s.n_head
    nested = sum(c.rank * (d_out + d_in + 2 * R) for d_out, d_in in s.layers)
    return down, nested + s.n_head


def _ce_lora(s: Shapes, c: Contact) -> tuple[int, int]:
    stats = s.class_stats() if c.first else 0  # per-class feature statistics, once
    return s.core(c.rank) + s.n_head, s.core(c.rank) + s.n_head + stats


def _frlora(s: Shapes, c: Contact) -> tuple[int, int]:
    # the dense merged update R down (clients rebuild B0, A0 by SVD), B and A up
    return s.dense() + s.n_head, s.pair(c.rank) + s.n_head


def _top_k_message(n: int, density: float) -> int:
    """Floats (values + int32 indices) of a top-k of ``n`` entries, or ``n`` when sent dense."""
    k = max(1, int(density * n))
    return n if 2 * k >= n else 2 * k


def _flasc(s: Shapes, c: Contact) -> tuple[int, int]:
    # one global top-k over the client's factors and head (densities from hp; defaults 1/4)
    n = s.pair(c.rank) + s.n_head
    down, up = c.hp.get("density_down", 0.25), c.hp.get("density_up", 0.25)
    return _top_k_message(n, down), _top_k_message(n, up)


def _fedlease(s: Shapes, c: Contact) -> tuple[int, int]:
    """FedLEASE's bytes, which depend on the round and on the chosen number of experts.

    First contact (any round): the initial LoRA at ``r_k`` and head down, the LoRA
    up; later warm-up rounds nothing down, the LoRA up; afterwards all ``M`` experts at
    ``r_max`` and the cluster's router ``(2M−1, d_in)`` down, the own expert at ``r_k`` and the
    router up. ``hp``: ``warmup_rounds`` (default 5) and ``num_experts`` ``M`` (chosen by the
    silhouette search on the warm-up LoRAs; default ``M_max = 4``).
    """
    lora = s.pair(c.rank)
    if c.first:
        return lora + s.n_head, lora
    if c.round <= c.hp.get("warmup_rounds", 5):
        return 0, lora
    experts = int(c.hp.get("num_experts", 4))
    router = (2 * experts - 1) * sum(d_in for _, d_in in s.layers)
    bank = experts * s.pair(max(c.max_rank, c.rank))  # every expert at r_max
    return bank + router, lora + router


FORMULAS: Mapping[str, Formula] = {
    "centralized": _pair_both_ways,  # the one pooled client at the largest rank
    "fedit": _pair_both_ways,
    "flexlora": _pair_both_ways,
    "lora-fair": _pair_both_ways,
    "hetlora": _hetlora,
    "ilora": _ilora,
    "ilora-s": _ilora_s,
    "ffa-lora": _ffa_lora,
    "flora": _flora,
    "fedex-lora": _fedex_lora,
    "fedsa-lora": _fedsa_lora,
    "ce-lora": _ce_lora,
    "fslora": _pair_both_ways,  # the k_i-component slices both ways; the sketch seed is shared
    "frlora": _frlora,
    "flasc": _flasc,
    "fl-tac": _pair_both_ways,  # the cluster's adapter and head down, the client's up
    "fedlease": _fedlease,
    "fedloru": _fedloru,
    "pfedloru": _fedloru,  # the personal branch never travels
    "mfedloru": _mfedloru,
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
