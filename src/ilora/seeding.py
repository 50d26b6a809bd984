"""Explicit randomness: every draw comes from a generator derived from named parts.

``derive_seed(seed, "init", "layer.0.query")`` hashes its parts into a 63-bit seed, so a draw
depends only on what it is for, never on call order, process or client order. Local training
runs inside ``local_rng(seed, round, cid)``, which fixes the global torch RNG (dropout) for the
block and restores it afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: config validation and `ilora list` load no torch
    import numpy as np
    import torch


def derive_seed(*parts: object) -> int:
    """Return a 63-bit seed determined by ``parts`` (their ``repr``s, in order)."""
    digest = hashlib.sha256("\x1f".join(repr(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded by ``derive_seed(*parts)``."""
    import torch

    return torch.Generator().manual_seed(derive_seed(*parts))


def np_rng(*parts: object) -> np.random.Generator:
    """Return a NumPy generator seeded by ``derive_seed(*parts)``."""
    import numpy as np

    return np.random.default_rng(derive_seed(*parts))


@contextmanager
def local_rng(*parts: object) -> Iterator[None]:
    """Seed torch's global RNG from ``parts`` inside the block and restore it on exit."""
    import torch

    state = torch.get_rng_state()
    torch.manual_seed(derive_seed("local", *parts))
    try:
        yield
    finally:
        torch.set_rng_state(state)
