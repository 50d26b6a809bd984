"""A bounded cache of results computed from one frozen tensor, keyed by the tensor's bytes.

ILoRA's clients rebuild the same QR init from the same frozen base weight every time they start
a round (``client_init``), and a benchmark worker runs many runs of one pretrained model. The key
is a digest of the tensor's bytes, its shape and dtype, plus the caller's own key, never the
tensor's identity: a hit means equal inputs, so the cached result *is* the result and a run is
bitwise identical with or without the cache. Hashing a weight costs one pass over its bytes,
against a QR of the whole matrix.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Pair = tuple["torch.Tensor", "torch.Tensor"]


def digest(t: torch.Tensor) -> bytes:
    """Return a 16-byte BLAKE2b digest of ``t``'s dtype, shape and bytes."""
    import torch

    flat = t.detach().contiguous().reshape(-1).view(torch.uint8)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(flat.numpy().data)
    return h.digest()


class PairMemo:
    """Least-recently-used cache of tensor pairs computed from one tensor, up to ``max_bytes``.

    ``get`` returns clones: a caller may train the tensors it receives in place.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[bytes, Hashable], Pair] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, source: torch.Tensor, key: Hashable, compute: Callable[[], Pair]) -> Pair:
        """Return ``compute()`` for ``(source, key)``, from the cache when it holds it."""
        full = (digest(source), key)
        with self._lock:
            hit = self._items.get(full)
            if hit is not None:
                self._items.move_to_end(full)
        if hit is None:
            hit = compute()
            self._remember(full, hit)
        return hit[0].clone(), hit[1].clone()

    def __len__(self) -> int:
        return len(self._items)

    def _remember(self, full: tuple[bytes, Hashable], pair: Pair) -> None:
        size = sum(t.numel() * t.element_size() for t in pair)
        if size > self.max_bytes:
            return
        with self._lock:
            if full in self._items:
                return
            self._items[full] = pair
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= sum(t.numel() * t.element_size() for t in old)
