"""``ilora bench engine``: the embedded engine's cost over bare local training, and its memory.

**Overhead.** For each algorithm, ``repeats`` times: one engine run (``ilora.engine.simulation
.run``) of ``rounds + 1`` rounds, of which the first ``rounds`` are timed (``wall_s`` of each
round: sampling, downloads, client turns with their checks, aggregation; the last round, which
evaluates, is dropped), and, side by side in the same process, the bare cost of the same local
training: the same sampled clients, model, data batches and AdamW steps in a plain loop
(forward, backward, step), with each client's adapter installed untimed. Overhead =
``Σ engine / Σ bare − 1`` per repeat; each bare round runs right after its engine round. Both
wall time and this process's CPU time are recorded: on a shared machine the wall time also
counts other processes' work, while the CPU time (one torch thread) counts ours only; an engine
round's CPU time runs from the end of the previous pair (the first from the start of ``run``).

**Memory.** One fresh process per client count ``N`` runs the same task with ``N`` clients
(IID shares), a fixed number of clients sampled per round, few rounds and local steps, and
reports its peak resident set (``VmHWM``) over the whole process and over the rounds alone
(the mark reset after the set-up, whose data loading and tokenizing peak does not depend on
``N``), its resident set after the set-up, the model's bytes and the mean adapter's bytes (the
LoRA factors at a client's rank plus the head).

**Scale.** Peak memory and round time of ILoRA-S from 1,000 to 100,000 registered clients,
with every client holding its state, in the memory and the disk client store
(:mod:`ilora.bench.scale`).

Files: ``overhead.csv`` (one row per round and repeat), ``memory.csv`` (one row per ``N``),
``meta.json``; ``scale/scale.csv`` and ``scale/meta.json``. ``parts`` chooses what runs (the
other parts' files are left as they are).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilora.bench import scale
from ilora.bench.resultfiles import write_meta
from ilora.bench.resultfiles import write_rows

Row = dict[str, Any]
Log = Callable[[str], None]
PARTS = ("overhead", "memory", "scale")


@dataclass(frozen=True)
class Plan:
    """What one run measures (see the module docstring)."""

    config: str = "configs/demo.yaml"
    overrides: tuple[str, ...] = ("fed.fraction=0.3",)  # 3 of the demo's 10 clients per round
    algorithms: tuple[str, ...] = ("fedit", "ilora")
    rounds: int = 3
    repeats: int = 3
    memory_config: str = "configs/demo.yaml"
    memory_overrides: tuple[str, ...] = ("task_args.num_layers=6", "task_args.max_test=500")
    memory_algorithm: str = "ilora"
    clients: tuple[int, ...] = (10, 100, 1000)
    sampled: int = 5  # clients per round in the memory runs, whatever N
    memory_rounds: int = 2
    memory_steps: int = 2
    threads: int = 1
    parts: tuple[str, ...] = ("overhead", "memory", "scale")
    scale_config: str = "configs/smoke.yaml"
    scale_overrides: tuple[str, ...] = (
        "lora.ranks=[8]",
        "train.steps=2",
        "train.batch_size=4",
        "eval.subset=64",
        "eval.every=1000",
    )
    scale_clients: tuple[int, ...] = (1000, 10000, 100000)
    scale_stores: tuple[str, ...] = ("memory", "disk")
    scale_sampled: int = 10
    scale_rounds: int = 4


QUICK = Plan(
    config="configs/smoke.yaml",
    overrides=(),
    rounds=2,
    repeats=2,
    memory_overrides=(
        "task_args.num_layers=1",
        "task_args.max_train=4000",
        "task_args.max_test=200",
    ),
    clients=(10, 100),
    memory_rounds=1,
    memory_steps=1,
    scale_clients=(100, 1000),
    scale_rounds=2,
)


def check_plan(plan: Plan) -> None:
    """Reject a plan that cannot run: counts below 1, unknown names, bad configs.

    Raises:
        ValueError: naming the option (``ConfigError`` for the configs).

    """
    from ilora.engine.setup import validate

    counts = (plan.rounds, plan.repeats, plan.sampled, plan.memory_rounds, plan.memory_steps)
    if min((*counts, plan.threads, *plan.clients)) < 1 or not plan.clients:
        raise ValueError("--rounds, --repeats, --sampled, --threads and --clients must be >= 1")
    if min((plan.scale_sampled, plan.scale_rounds, *plan.scale_clients), default=0) < 1:
        raise ValueError("--scale-clients and --scale-sampled must be >= 1")
    unknown = set(plan.parts) - set(PARTS)
    if unknown or not plan.parts:
        raise ValueError(f"--parts: choose from {', '.join(PARTS)}, got {', '.join(plan.parts)}")
    for name in plan.algorithms:
        validate(load_config(plan.config, [*plan.overrides, f"algorithm={name}"]))
    validate(load_config(plan.memory_config, memory_overrides(plan, plan.clients[0])))


def load_config(path: str, overrides: list[str]) -> Any:
    from ilora import config as config_mod

    return config_mod.load(path, overrides)


def bare_round(exp: Any, rnd: int, steps: int) -> tuple[float, float]:
    """Return the wall and CPU seconds of round ``rnd``'s local steps in a plain loop.

    Each sampled client gets the setup its algorithm would install (``client_init`` of its
    download from the initial state; the shapes and thus the compute of every round), then
    AdamW steps over the same seeded batches as the engine: forward, backward, step.
    """
    from ilora.engine.local import batch_indices
    from ilora.engine.local import classification_loss
    from ilora.engine.local import make_context
    from ilora.engine.local import make_optimizer
    from ilora.engine.sampling import sample_clients
    from ilora.engine.simulation import run_clients
    from ilora.engine.turn import canonical_payload
    from ilora.lora import keys
    from ilora.lora.state import load_setup
    from ilora.lora.state import template
    from ilora.types import RoundInfo

    cfg, alg, model = exp.cfg, exp.algorithm, exp.model
    clients, shares, _ = run_clients(exp)
    train = cfg.train
    state = alg.server_init(template(model), clients, cfg.lora, cfg.seed)
    wall = cpu = 0.0
    for cid in sample_clients([c.cid for c in clients], cfg.fed.fraction, cfg.seed, rnd):
        info = RoundInfo(rnd, cfg.seed)
        payload = canonical_payload(alg.download(state, clients[cid], RoundInfo(1, cfg.seed)))
        ctx = make_context(model, payload, clients[cid], info, cfg.lora, train)
        params = load_setup(model, alg.client_init(ctx, {})[0])
        if not train.train_head:
            params = {k: p for k, p in params.items() if not keys.is_param(k)}
        data = shares[cid]
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        opt = make_optimizer(params, train)
        batches = batch_indices(len(data), train.batch_size, cfg.seed, rnd, cid)
        for _, idx in zip(range(steps), batches, strict=False):
            loss = classification_loss(model, data, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return wall, cpu


def overhead(plan: Plan, log: Log) -> list[Row]:
    """Return one row per timed round: engine and bare seconds (see the module docstring)."""
    from ilora.engine.setup import build

    rows: list[Row] = []
    for name in plan.algorithms:
        rounds = plan.rounds + 1  # the last round evaluates: run, not timed
        timing = [f"fed.rounds={rounds}", f"eval.every={rounds}", "eval.final_full=false"]
        cfg = load_config(plan.config, [*plan.overrides, f"algorithm={name}", *timing])
        for rep in range(plan.repeats):
            records, cpu, bare = _paired_rounds(cfg, build(cfg), plan.rounds)
            for rec, c, (b, b_cpu) in zip(records, cpu, bare, strict=True):
                rows.append(
                    {
                        "algorithm": name,
                        "repeat": rep,
                        "round": rec.round,
                        "engine_s": rec.wall_s,
                        "bare_s": b,
                        "engine_cpu_s": c,
                        "bare_cpu_s": b_cpu,
                        "sampled": rec.clients["sampled"],
                        "steps": cfg.train.steps,
                    }
                )
            ratio = sum(cpu) / sum(b for _, b in bare) - 1
            log(f"overhead {name} repeat {rep}: {100 * ratio:+.1f}% (CPU time)")
    return rows


def _paired_rounds(
    cfg: Any, exp: Any, timed: int
) -> tuple[list[Any], list[float], list[tuple[float, float]]]:
    """Run the engine with the bare loop of each timed round right after that round.

    Returns the first ``timed`` round records, their CPU seconds and the bare rounds' (wall,
    CPU) seconds. Pairing round by round exposes both to the same load on a shared machine.
    The bare loop only installs its own setups, which every engine turn replaces.
    """
    from ilora.engine.simulation import run

    cpu: list[float] = []
    bare: list[tuple[float, float]] = []
    mark = [time.process_time()]

    def on_round(record: Any) -> None:
        cpu.append(time.process_time() - mark[0])
        if record.round <= timed:
            bare.append(bare_round(exp, record.round, cfg.train.steps))
        mark[0] = time.process_time()

    history = run(cfg, exp=exp, on_round=on_round).history
    return history.records[:timed], cpu[:timed], bare


def memory_overrides(plan: Plan, n: int) -> list[str]:
    """Return the overrides of the memory run with ``n`` clients."""
    return [
        *plan.memory_overrides,
        f"algorithm={plan.memory_algorithm}",
        f"data.num_clients={n}",
        "data.partition=iid",
        "data.partition_args={}",
        "data.local_test_fraction=0.0",
        f"fed.fraction={min(1.0, plan.sampled / n)}",
        f"fed.rounds={plan.memory_rounds}",
        f"train.steps={plan.memory_steps}",
        "eval.subset=200",
        "eval.final_full=false",
    ]


def memory(plan: Plan, log: Log) -> list[Row]:
    """Return one row per client count, each measured in a fresh process."""
    rows = []
    for n in plan.clients:
        spec = json.dumps({"plan": asdict(plan), "clients": n})
        cmd = [sys.executable, "-m", "ilora.bench.engine_memory", spec]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"memory run with {n} clients failed:\n{res.stderr[-3000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        log(f"memory {n} clients: peak RSS {row['peak_rss_bytes'] / 2**30:.2f} GiB")
        rows.append(row)
    return rows


def run(plan: Plan, out: Path, quick: bool, log: Log = print) -> None:
    """Measure both parts of ``plan`` and write ``out``'s files."""
    import torch

    torch.set_num_threads(plan.threads)
    if "overhead" in plan.parts:
        write_rows(out / "overhead.csv", overhead(plan, log))
    if "memory" in plan.parts:
        write_rows(out / "memory.csv", memory(plan, log))
    if "overhead" in plan.parts or "memory" in plan.parts:
        write_meta(out, quick, plan=asdict(plan))
    if "scale" in plan.parts:
        args = (plan.scale_clients, plan.scale_stores, plan.scale_sampled, plan.scale_rounds)
        rows = scale.measure(plan.scale_config, plan.scale_overrides, *args, plan.threads, log)
        write_rows(out / "scale" / "scale.csv", rows)
        write_meta(out / "scale", quick, plan=asdict(plan), scale_workload=scale.WORKLOAD)
