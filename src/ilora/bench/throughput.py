"""``ilora bench throughput``: client training steps per second and GFLOP/s against the peak.

**Workloads.** ``minilm``: the demo (``configs/demo.yaml``: 3-layer MiniLM, 32 tokens, batch
32) with LoRA rank 8 on query and value; ``mobilenetv2``: the Fashion-MNIST preset
(``configs/bench-quality/fashion-mnist.yaml``: 32x32 images, batch 8) with rank 8 on the 34
pointwise convolutions. One client's training step as the local loop runs it
(``engine.local.classification_loss`` under the model's precision, backward, AdamW step), on
client 0's full batches, the adapter installed by FedIT's ``client_init``.

**Timing.** Per repeat, for each precision in turn on the same model (side by side), ``steps``
timed steps (after ``warmup`` untimed ones per precision at the start); the step time is their
wall time and, separately, this process's CPU time over ``steps``. With one torch thread the
CPU time counts our work only, while on a shared machine the wall time also counts other
processes' work in the gaps of ours: the CPU-time figures are the ones to read there. The matmul
peak is an ``n x n`` by ``n x n`` product (``n = matmul_size``) in fp32 and in bf16, timed the
same two ways in each repeat with the same thread count, ``2 n^3`` FLOPs each; medians.

**FLOPs counting.** ``torch.utils.flop_counter.FlopCounterMode`` over one training step counts,
from the operand shapes, ``2 m n k`` per matrix product (``mm``, ``addmm``, ``bmm``, attention)
and ``2 x output elements x (C_in / groups) x kernel area`` per convolution, for every such
operation the step dispatches: the forward, and in the backward only the gradients autograd
computes (the input gradients through the frozen layers above the lowest adapter, the adapters'
and head's weight gradients; no weight gradient of a frozen weight). Element-wise operations,
norms, softmax, casts and the optimizer are not counted: the figure is the step's useful
matmul/convolution work, the same unit as the matmul peak.

**Why.** One profiled chunk of steps per workload and precision splits the step's CPU time into
matmul/convolution kernels, dtype casts and copies, dropout's random masks (``bernoulli_``), the
optimizer and everything else (self time of each operator, ``torch.profiler``), which says where
a step below the peak loses it.

**Variants.** ``--compare`` also times, side by side in every repeat, bf16 as plain autocast runs
it (``recast``: every frozen weight cast again at every call, convolutions contiguous) beside
our default bf16 (the frozen layers' cast cache, ``engine.castcache``; bitwise the same step):
the cache's before/after ratio measured in one run.

Files: ``steps.csv`` (workload, precision, variant, repeat: seconds per step, GFLOP/s),
``matmul.csv`` (precision, repeat: GFLOP/s), ``breakdown.csv`` (workload, precision, variant,
category: seconds, share), ``eval.csv`` (workload, precision, variant, repeat: milliseconds per
example of an evaluation pass, ``bench.evalspeed``, timed after each step row), ``meta.json``
(plan, each workload's shapes and FLOPs per step, the resolved CPU capability).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilora.bench.matmulpeak import matmul_row
from ilora.bench.resultfiles import write_results

Row = dict[str, Any]
Log = Callable[[str], None]
RANK8 = ("algorithm=fedit", "lora.rank_policy=uniform", "lora.rank=8", "train.precision=fp32")
WORKLOADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "minilm": ("configs/demo.yaml", RANK8),
    "mobilenetv2": ("configs/bench-quality/fashion-mnist.yaml", RANK8),
    "tiny-text": ("configs/smoke.yaml", RANK8),  # the quick preset's smoke workload
}
PRECISIONS = ("fp32", "bf16")
Mode = tuple[str, str]  # (precision, variant)
DEFAULT, RECAST = "default", "recast"  # our implementation; bf16 as plain autocast runs it


@dataclass(frozen=True)
class Plan:
    """What one run measures (see the module docstring)."""

    workloads: tuple[str, ...] = ("minilm", "mobilenetv2")
    steps: int = 10
    warmup: int = 3
    repeats: int = 5
    matmul_size: int = 1024
    profile_steps: int = 5
    threads: int = 1
    compare: bool = False  # also time bf16 ``recast`` (module docstring)
    eval_batches: int = 4  # full batches of the evaluation pass (``bench.evalspeed``)

    def modes(self) -> tuple[Mode, ...]:
        """Return the ``(precision, variant)`` pairs each repeat times, in order."""
        extra = ((PRECISIONS[1], RECAST),) if self.compare else ()
        return tuple((p, DEFAULT) for p in PRECISIONS) + extra


QUICK = Plan(
    workloads=("tiny-text",), steps=2, warmup=1, repeats=2, matmul_size=128, eval_batches=1
)


def check_plan(plan: Plan) -> None:
    """Reject a plan that cannot run.

    Raises:
        ValueError: naming the option.

    """
    counts = (plan.steps, plan.repeats, plan.matmul_size, plan.profile_steps, plan.threads)
    if plan.eval_batches < 1:
        raise ValueError("eval_batches must be >= 1")
    if min(counts) < 1 or plan.warmup < 0:
        raise ValueError(
            "--steps, --repeats, --matmul-size and --threads must be >= 1, --warmup >= 0"
        )
    unknown = [w for w in plan.workloads if w not in WORKLOADS]
    if unknown or not plan.workloads:
        raise ValueError(f"--workloads: unknown {unknown}; choose from {sorted(WORKLOADS)}")


class Client:
    """One client's installed adapter, optimizer and full batches on a built experiment."""

    def __init__(self, name: str) -> None:
        from ilora import config as config_mod
        from ilora.engine.local import batch_indices
        from ilora.engine.local import make_context
        from ilora.engine.local import make_optimizer
        from ilora.engine.setup import build
        from ilora.engine.turn import canonical_payload
        from ilora.lora.state import load_setup
        from ilora.lora.state import template
        from ilora.types import RoundInfo

        path, overrides = WORKLOADS[name]
        exp = build(config_mod.load(path, list(overrides)))
        cfg, alg, model, info = exp.cfg, exp.algorithm, exp.model, exp.clients[0]
        state = alg.server_init(template(model), exp.clients, cfg.lora, cfg.seed)
        payload = canonical_payload(alg.download(state, info, RoundInfo(1, cfg.seed)))
        ctx = make_context(model, payload, info, RoundInfo(1, cfg.seed), cfg.lora, cfg.train)
        self.params = load_setup(model, alg.client_init(ctx, {})[0])
        self.model, self.data, self.batch = model, exp.shares[0], cfg.train.batch_size
        self.opt = make_optimizer(self.params, cfg.train)
        batches = batch_indices(len(self.data), self.batch, cfg.seed, 1, info.cid)
        self.batches = (idx for idx in batches if len(idx) == self.batch)
        self.shape = {k: list(v.shape[1:]) for k, v in self.data.inputs.items()}
        model.train()

    def step(self) -> None:
        """Run one training step: forward in the model's precision, backward, AdamW."""
        from ilora.engine.local import classification_loss

        loss = classification_loss(self.model, self.data, next(self.batches))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.opt.step()

    def flops(self) -> int:
        """Return the matmul/convolution FLOPs of one step (module docstring)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            self.step()
        return int(counter.get_total_flops())


def category(op: str) -> str:
    """Return the breakdown category of a profiled operator name."""
    if any(s in op for s in ("bernoulli", "dropout")):
        return "dropout RNG"
    if any(s in op for s in ("mm", "conv", "scaled_dot_product", "linear")):
        return "matmul/conv"
    if any(s in op for s in ("copy", "_to_", "aten::to")):
        return "casts/copies"
    if any(s in op for s in ("adam", "_foreach", "Optimizer")):
        return "optimizer"
    return "other"


def breakdown(client: Client, steps: int) -> dict[str, float]:
    """Return self CPU seconds by :func:`category` over ``steps`` profiled steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            client.step()
    out: dict[str, float] = {}
    for evt in prof.key_averages():
        cat = category(evt.key)
        out[cat] = out.get(cat, 0.0) + evt.self_cpu_time_total / 1e6
    return out


def _place(client: Client, mode: Mode) -> None:
    """Put the client's model in ``mode``'s precision and implementation."""
    from ilora.engine.compute import place

    place(client.model, "cpu", mode[0], cast_cache=mode[1] == DEFAULT)


def _prepare(name: str, plan: Plan) -> tuple[Client, dict[str, int]]:
    """Return the workload's client, warmed up, and its FLOPs per step by precision."""
    client, flops = Client(name), {}
    for mode in plan.modes():
        _place(client, mode)
        for _ in range(plan.warmup):
            client.step()
        flops[mode[0]] = client.flops()
    return client, flops


def _step_row(name: str, client: Client, flops: int, mode: Mode, rep: int, steps: int) -> Row:
    _place(client, mode)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        client.step()
    wall, cpu = (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
    return {
        "workload": name,
        "precision": mode[0],
        "variant": mode[1],
        "repeat": rep,
        "steps": steps,
        "step_s": round(wall, 6),
        "cpu_step_s": round(cpu, 6),
        "flops_per_step": flops,
        "gflops": round(flops / wall / 1e9, 3),
        "cpu_gflops": round(flops / cpu / 1e9, 3),
    }


def _breakdown_rows(name: str, client: Client, plan: Plan) -> list[Row]:
    rows = []
    for mode in plan.modes():
        _place(client, mode)
        cats = breakdown(client, plan.profile_steps)
        total = sum(cats.values())
        rows += [
            {
                "workload": name,
                "precision": mode[0],
                "variant": mode[1],
                "category": c,
                "self_s": round(s, 6),
                "share": round(s / total, 4),
            }
            for c, s in sorted(cats.items())
        ]
    return rows


def _shape(name: str, client: Any, flops: Any) -> dict[str, Any]:
    """Return the ``meta.json`` description of one workload (shapes, FLOPs, its preset)."""
    return {
        "batch_size": client.batch,
        "input_shape": client.shape,
        "flops_per_step": flops,
        "config": WORKLOADS[name][0],
        "overrides": list(WORKLOADS[name][1]),
    }


def run(plan: Plan, out: Path, quick: bool, log: Log = print) -> list[str]:
    """Measure (see the module docstring), write the result files, return their names.

    Each repeat times the matmuls and every workload in both precisions back to back, so that
    the ratios compare measurements taken under the same load.
    """
    import torch

    from ilora.bench.evalspeed import eval_row
    from ilora.bench.evalspeed import eval_set
    from ilora.engine.compute import native_bf16

    torch.set_num_threads(plan.threads)
    clients = {name: _prepare(name, plan) for name in plan.workloads}
    steps, mm, evals = [], [], []
    held = {n: eval_set(c.data, c.batch, plan.eval_batches) for n, (c, _) in clients.items()}
    for rep in range(plan.repeats):
        for prec in PRECISIONS:
            mm.append(matmul_row(plan.matmul_size, prec, rep))
            log(f"matmul {plan.matmul_size} {prec} repeat {rep}: {mm[-1]['cpu_gflops']} GFLOP/s")
        for name, (client, flops) in clients.items():
            for mode in plan.modes():
                row = _step_row(name, client, flops[mode[0]], mode, rep, plan.steps)
                steps.append(row)
                evals.append(
                    {"workload": name} | eval_row(client.model, held[name], client.batch, mode, rep)
                )
                log(
                    f"{name} {'/'.join(mode)} repeat {rep}: {row['cpu_step_s']} CPU s/step, "
                    f"{row['cpu_gflops']} GFLOP/s (CPU time), {row['gflops']} (wall)"
                )
    parts = [r for name, (c, _) in clients.items() for r in _breakdown_rows(name, c, plan)]
    shapes = {name: _shape(name, c, f) for name, (c, f) in clients.items()}
    tables = {"steps.csv": steps, "matmul.csv": mm, "breakdown.csv": parts, "eval.csv": evals}
    return write_results(
        out,
        tables,
        quick,
        launcher=f"OMP_NUM_THREADS={plan.threads}",
        plan=asdict(plan),
        workloads=shapes,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        native_bf16=native_bf16("cpu"),
    )
