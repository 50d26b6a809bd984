"""The evaluation pass of ``ilora bench throughput``: inference-mode forward in each mode.

``engine.evaluation.evaluate`` (eval mode, inference mode, the model's precision) over the
first ``batches`` full batches of the workload's client 0, at the training batch size, timed in
wall and CPU time: the other half of what a round pays for, with no backward, dropout or
optimizer, so the matmuls' share (and bf16's gain) is larger than in a training step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from ilora.tasks.base import ArrayDataset

Row = dict[str, Any]


def eval_set(data: ArrayDataset, batch: int, batches: int) -> ArrayDataset:
    """Return the first ``batches`` full batches of ``data`` (fewer where it is smaller)."""
    import torch

    n = min(len(data), batch * batches) // batch * batch
    return data.subset(torch.arange(n))


def eval_row(model: Any, data: ArrayDataset, batch: int, mode: tuple[str, str], rep: int) -> Row:
    """Return one repeat's ``eval.csv`` row: seconds per example, wall and CPU time."""
    from ilora.engine.evaluation import evaluate

    t0, c0 = time.perf_counter(), time.process_time()
    evaluate(model, data, batch)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = max(1, len(data))
    return {
        "precision": mode[0],
        "variant": mode[1],
        "repeat": rep,
        "examples": len(data),
        "ms_per_example": round(1e3 * wall / n, 4),
        "cpu_ms_per_example": round(1e3 * cpu / n, 4),
    }
