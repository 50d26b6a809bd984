"""Bytes on the wire: the analytic formula each algorithm declares beside its class.

Every algorithm module ends with its formula, registered with ``@traffic.formula(TheClass)``:
what a client of rank ``r`` downloads and uploads in one round, in float32 *floats*, written
from the paper's protocol and independently of the algorithm's hooks, so that
``tests/engine/test_communication.py`` (and ``ilora bench comm``) can check the engine's measured
``bytes_up``/``bytes_down`` against it for every registered algorithm. A class without one
fails that test (:func:`formula_of` raises).

Per adapted layer ``(d_out, d_in)``: a factor pair at rank ``r`` is ``r·(d_out + d_in)`` floats,
B alone ``d_out·r``, A alone ``r·d_in``, a dense update ``d_out·d_in``; ``n_head`` is the number
of trainable head floats (classifier), 0 when the head is frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from ilora.lora import keys

if TYPE_CHECKING:
    import torch

FLOAT32 = 4  # bytes per float on the wire


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

    ``max_rank`` is the largest client rank of the run (where global factors live at ``r_max``);
    ``hp`` holds the algorithm's hyperparameters (preset included) and what the run reported.
    """

    rank: int
    round: int
    first: bool
    max_rank: int = 0
    hp: Mapping[str, Any] = field(default_factory=dict)  # hyperparameters, observed M, ...


Formula = Callable[[Shapes, Contact], tuple[int, int]]  # -> (down, up) in floats

_FORMULAS: dict[type, Formula] = {}


def formula(cls: type) -> Callable[[Formula], Formula]:
    """Return a decorator that declares its function as the byte formula of ``cls``.

    Raises:
        ValueError: if ``cls`` already has one.

    """

    def declare(f: Formula) -> Formula:
        if cls in _FORMULAS:
            raise ValueError(f"{cls.__name__} already has a byte formula")
        _FORMULAS[cls] = f
        return f

    return declare


def formula_of(cls: type) -> Formula:
    """Return the byte formula declared for exactly ``cls`` (not inherited).

    Raises:
        LookupError: naming the class and how to declare one.

    """
    try:
        return _FORMULAS[cls]
    except KeyError:
        raise LookupError(
            f"{cls.__name__} declares no byte formula; end its module with a function "
            f"decorated @traffic.formula({cls.__name__}) (see ilora.algorithms.traffic)"
        ) from None


def pair_both_ways(s: Shapes, c: Contact) -> tuple[int, int]:
    """Return the client's (B, A) at its rank and the head, down and up (FedAvg-like)."""
    return s.pair(c.rank) + s.n_head, s.pair(c.rank) + s.n_head


def top_k_message(n: int, density: float) -> int:
    """Floats (values + int32 indices) of a top-k of ``n`` entries, or ``n`` when sent dense."""
    k = max(1, int(density * n))
    return n if 2 * k >= n else 2 * k


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


def pair_and_residual_down(s: Shapes, c: Contact) -> tuple[int, int]:
    """Return (B, A) at ``r_k``, the dense residual and the head down; (B, A), head up.

    A stateless client rebuilds its starting point from what it downloads.
    """
    return s.pair(c.rank) + s.dense() + s.n_head, s.pair(c.rank) + s.n_head


def dense_down_pair_up(s: Shapes, c: Contact) -> tuple[int, int]:
    """Return the dense merged update and head down, (B, A) at ``r_k`` and the head up."""
    return s.dense() + s.n_head, s.pair(c.rank) + s.n_head
