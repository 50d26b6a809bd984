"""The content-keyed memo: a hit means equal bytes, results are clones, the size is bounded."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ilora.lora.linalg import qr_init
from ilora.lora.memo import Pair
from ilora.lora.memo import PairMemo
from ilora.lora.memo import digest


def counting(calls: list[int], W: torch.Tensor, r: int) -> Callable[[], Pair]:
    def compute() -> Pair:
        calls.append(r)
        return qr_init(W, r, 1e-4)

    return compute


def test_a_hit_returns_the_computed_result_without_recomputing() -> None:
    memo, calls = PairMemo(1 << 20), []
    W = torch.randn(12, 9, generator=torch.Generator().manual_seed(0))
    first = memo.get(W, 3, counting(calls, W, 3))
    again = memo.get(W.clone(), 3, counting(calls, W, 3))  # another tensor, the same bytes
    assert calls == [3]
    direct = qr_init(W, 3, 1e-4)
    for got in (first, again):
        assert torch.equal(got[0], direct[0]) and torch.equal(got[1], direct[1])


def test_other_bytes_shape_dtype_or_key_miss() -> None:
    memo, calls = PairMemo(1 << 20), []
    W = torch.randn(12, 9, generator=torch.Generator().manual_seed(1))
    changed = W.clone()
    changed[5, 4] += 1e-6
    for src, r in ((W, 3), (W, 4), (changed, 3), (W.reshape(9, 12), 3), (W.double(), 3)):
        memo.get(src, r, counting(calls, src, r))
    assert len(calls) == 5
    assert len({digest(W), digest(changed), digest(W.reshape(9, 12)), digest(W.double())}) == 4


def test_results_are_clones_a_caller_may_train_in_place() -> None:
    memo = PairMemo(1 << 20)
    W = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    B, _ = memo.get(W, 2, lambda: qr_init(W, 2, None))
    B.add_(100.0)
    B2, _ = memo.get(W, 2, lambda: qr_init(W, 2, None))
    assert torch.equal(B2, qr_init(W, 2, None)[0])


def test_the_cache_stays_within_its_byte_bound() -> None:
    W = [torch.full((8, 8), float(i)) for i in range(10)]
    pair_bytes = 2 * 8 * 8 * 4
    memo = PairMemo(3 * pair_bytes)
    for w in W:
        memo.get(w, 0, lambda w=w: (w.clone(), w.clone()))
    assert len(memo) == 3
    calls: list[int] = []
    memo.get(W[-1], 0, counting(calls, W[-1], 0))  # the newest stays
    memo.get(W[0], 0, counting(calls, W[0], 0))  # the oldest was evicted
    assert calls == [0]
