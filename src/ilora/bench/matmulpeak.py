"""The matmul peak of ``ilora bench throughput``: ``n x n`` by ``n x n``, ``2 n^3`` FLOPs.

Timed in wall and CPU time (the median of a few calls after a warm-up call that picks the
kernel), in fp32 or bf16, with the thread count the caller set.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def matmul_seconds(n: int, precision: str, calls: int) -> tuple[float, float]:
    """Return the median wall and CPU seconds of one ``n x n @ n x n`` product over ``calls``."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    a @ b  # warm-up: the first call picks the kernel  # noqa: B018
    walls, cpus = [], []
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b  # noqa: B018
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def matmul_row(n: int, prec: str, rep: int) -> dict[str, Any]:
    """Return one repeat's row of ``matmul.csv``: seconds and GFLOP/s, wall and CPU time."""
    wall, cpu = matmul_seconds(n, prec, calls=5)
    flops = 2 * n**3
    return {
        "precision": prec,
        "repeat": rep,
        "size": n,
        "seconds": round(wall, 6),
        "cpu_seconds": round(cpu, 6),
        "gflops": round(flops / wall / 1e9, 3),
        "cpu_gflops": round(flops / cpu / 1e9, 3),
    }
