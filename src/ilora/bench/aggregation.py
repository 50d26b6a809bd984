"""``ilora bench aggregation``: server aggregation time and peak memory per method.

Every registered method's ``aggregate`` (the pooled centralized reference excepted) is called on
its own round-1 uploads for one ``d x d`` layer (:mod:`ilora.bench.aggsetup`), over a sweep of
layer sizes at 12 clients and of client counts at one size, ranks cycling 4, 8, 16, 32. Two dense
forms of ILoRA's server step sit beside it on ILoRA's uploads: ``ilora:qr_literal`` (dense QR of
``ΔW``, the released code's path) and ``ilora:dense_svd`` (dense SVD of ``ΔW``).

Measurement: one worker process per (size, clients) configuration, started with glibc's mmap
threshold fixed (:mod:`ilora.bench.memory`) so that freed tensors leave the resident set. In it,
each method is called once untimed (warm-up), then ``repeats`` times; the methods that share
uploads (ILoRA and its dense forms) are interleaved, so machine noise hits them alike. Every
timed call also measures its peak extra resident memory (the growth of ``VmHWM`` from the
resident set before the call). ``stacked`` is the size of the stacked float64 factors ``B_c``,
``A_c`` (``8 (d_out + d_in) Σr`` bytes), the yardstick of the memory target. The worker checks
that ILoRA's factor-space result equals the truncated dense SVD (relative Frobenius error).

Files: ``aggregation.csv`` (one row per timed call), ``checks.csv``, ``meta.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilora.bench.memory import peak_extra
from ilora.bench.memory import worker_env
from ilora.bench.resultfiles import write_meta
from ilora.bench.resultfiles import write_rows

Row = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures (see the module docstring)."""

    dims: tuple[int, ...] = (768, 1024, 2048, 4096)  # layer sizes, at ``dims_clients`` clients
    dims_clients: int = 12
    clients: tuple[int, ...] = (4, 12, 32)  # client counts, at layer size ``clients_dim``
    clients_dim: int = 2048
    repeats: int = 3
    threads: int = 1
    methods: tuple[str, ...] = ()  # empty: every method (aggsetup.methods())

    def configs(self) -> list[tuple[int, int]]:
        """Return the distinct ``(d, clients)`` configurations, smallest work first."""
        pairs = {(d, self.dims_clients) for d in self.dims}
        pairs |= {(self.clients_dim, k) for k in self.clients}
        return sorted(pairs, key=lambda p: (p[0] * p[0] * p[1], p))


QUICK = Plan(dims=(256, 512), clients=(4, 12), clients_dim=256, repeats=2)
TARGET = (4096, 12)  # the target setting: d = 4096, 12 clients of ranks 4, 8, 16, 32


def check_plan(plan: Plan) -> None:
    """Reject a plan that cannot run, naming the option and the fix.

    Raises:
        ValueError: for a layer size below the largest rank, a count below 1 or an unknown
            method.

    """
    from ilora.bench.aggsetup import RANKS
    from ilora.bench.aggsetup import methods

    if min((*plan.dims, plan.clients_dim)) < max(RANKS):
        raise ValueError(f"layer sizes must be >= {max(RANKS)} (the largest rank)")
    if min((*plan.clients, plan.dims_clients, plan.repeats, plan.threads)) < 1:
        raise ValueError("client counts, --repeats and --threads must be >= 1")
    known = methods()
    unknown = [m for m in plan.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(known)}")


def groups(methods: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(source algorithm, methods)``: the methods aggregated on the same uploads."""
    from ilora.bench.aggsetup import source

    order: dict[str, list[str]] = {}
    for m in methods:
        order.setdefault(source(m), []).append(m)
    yield from order.items()


def measure(d: int, k: int, methods: list[str], repeats: int, threads: int) -> Iterator[Row]:
    """Yield one row per timed call, and one ``check`` row per ILoRA group (worker side)."""
    from ilora.bench.aggsetup import aggregator
    from ilora.bench.aggsetup import build_inputs
    from ilora.bench.aggsetup import relative_error_vs_dense
    from ilora.tensors import num_bytes

    for name, members in groups(methods):
        inputs = build_inputs(name, d, k)
        fns = {m: aggregator(m, inputs) for m in members}
        ranks = [inputs.clients[c].rank for c in sorted(inputs.uploads)]
        common = {
            "d": d,
            "clients": k,
            "ranks": ",".join(str(r) for r in sorted(set(ranks))),
            "sum_r": sum(ranks),
            "stacked_bytes": 8 * 2 * d * sum(ranks),
            "upload_bytes": sum(num_bytes(u.tensors) for u in inputs.uploads.values()),
            "threads": threads,
        }
        for fn in fns.values():  # warm-up: lazy LAPACK and allocator set-up
            fn(inputs.state, inputs.uploads)
        for rep in range(repeats):
            for m, fn in fns.items():
                seconds, extra = _timed(fn, inputs.state, inputs.uploads)
                timing = {"repeat": rep, "seconds": seconds, "peak_extra_bytes": extra}
                yield {"method": m, **common, **timing}
        if name == "ilora":
            err = relative_error_vs_dense(inputs.state, inputs.uploads)
            yield {"check": "ilora_vs_dense_svd", "d": d, "clients": k, "rel_error": err}
        del inputs, fns
        gc.collect()


def _timed(fn: Callable[[Any, Any], Any], state: Any, uploads: Any) -> tuple[float, int]:
    def call() -> tuple[Any, float]:
        t0 = time.perf_counter()
        out = fn(state, uploads)
        return out, time.perf_counter() - t0

    (_, seconds), extra = peak_extra(call)
    return seconds, extra


def run_worker(configs: list[tuple[int, int]], plan: Plan) -> list[Row]:
    """Measure ``configs`` in one fresh worker process and return their rows."""
    spec = {"configs": configs, **asdict(plan)}
    cmd = [sys.executable, "-m", "ilora.bench.aggregation", "--worker", json.dumps(spec)]
    res = subprocess.run(
        cmd, capture_output=True, text=True, env=worker_env(plan.threads), check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"aggregation worker {configs} failed:\n{res.stderr[-3000:]}")
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def run(plan: Plan, out: Path, quick: bool, log: Callable[[str], None] = print) -> list[Row]:
    """Run every configuration of ``plan``, write ``out``'s files and return the timing rows.

    Each configuration gets its own worker process; ``quick`` runs them all in one (one start-up
    instead of several; memory is measured per call, relative to the resident set before it).
    """
    from ilora.bench.aggsetup import RANKS
    from ilora.bench.aggsetup import UNIFORM_RANK
    from ilora.bench.aggsetup import methods

    chosen = list(plan.methods) or methods()
    plan = Plan(**{**asdict(plan), "methods": tuple(chosen)})
    batches = [plan.configs()] if quick else [[c] for c in plan.configs()]
    rows: list[Row] = []
    checks: list[Row] = []
    for batch in batches:
        t0 = time.perf_counter()
        got = run_worker(batch, plan)
        rows += [r for r in got if "method" in r]
        checks += [r for r in got if "check" in r]
        where = ", ".join(f"d={d} clients={k}" for d, k in batch)
        log(f"{where}: {len(chosen)} methods in {time.perf_counter() - t0:.0f} s")
    write_rows(out / "aggregation.csv", rows)
    if checks:
        write_rows(out / "checks.csv", checks)
    target = {"d": TARGET[0], "clients": TARGET[1]}
    write_meta(
        out, quick, plan=asdict(plan), target=target, ranks=list(RANKS), uniform_rank=UNIFORM_RANK
    )
    return rows


def _worker(spec_json: str) -> None:
    import torch

    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    methods = list(spec["methods"])
    for d, k in spec["configs"]:
        for row in measure(d, k, methods, spec["repeats"], spec["threads"]):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: one aggregation benchmark worker")
    parser.add_argument("--worker", required=True, help="JSON spec of the configurations")
    _worker(parser.parse_args().worker)
