"""``ilora bench engine``, scale part: peak memory and round time vs registered clients.

One fresh process per client count ``N`` and client store (``fed.client_store``: ``memory`` or
``disk``) runs ILoRA-S with ``N`` registered clients and a fixed number sampled per round.
Before the rounds every client is given a state of the shapes ILoRA-S keeps (its control
variates ``c_k`` at its rank and the head, seeded values), as after a long run in which every
client has been sampled: the memory a store needs for ``N`` clients, which a short run that
samples a few clients would never show. The run then resumes from that state (round 0) and
records each round's wall and CPU time (this process, one torch thread: on a shared
machine the wall time also counts other processes' work), the peak resident set of the
rounds (``VmHWM`` reset after the set-up) and of the whole process.

**Workload.** ``configs/smoke.yaml``'s ``tiny-text`` (a 2-layer, 32-wide random BERT), with 4
synthetic examples per client (400,000 for 100,000 clients: no real dataset here has that
many examples, and every client needs one). Everything per client that the engine holds or
touches (states, data shares, sampling, the client list) is independent of the model, so a
small model measures the engine's own growth with ``N``, and makes any per-round O(N) work
more visible against the round's compute, not less. The per-client state bytes are reported
so the memory store's need at a larger model can be read off (``N × state``).

File: ``scale.csv``, one row per client count and store.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Row = dict[str, Any]
# what every scale run is, whatever the config (meta.json "scale_workload"; the report states it)
ALGORITHM, PARTITION, EXAMPLES_PER_CLIENT = "ilora-s", "iid", 4
WORKLOAD = dict(algorithm=ALGORITHM, partition=PARTITION, examples_per_client=EXAMPLES_PER_CLIENT)


def scale_overrides(
    base: tuple[str, ...], n: int, sampled: int, rounds: int, store: str
) -> list[str]:
    """Return the overrides of the scale run with ``n`` clients and ``store``."""
    return [
        *base,
        f"algorithm={ALGORITHM}",
        f"task_args.n_train={EXAMPLES_PER_CLIENT * n}",
        f"data.num_clients={n}",
        f"data.partition={PARTITION}",
        "data.partition_args={}",
        "data.local_test_fraction=0.0",
        f"fed.fraction={min(1.0, sampled / n)}",
        f"fed.rounds={rounds}",
        f"fed.client_store={store}",
        "eval.final_full=false",
    ]


def _states(exp: Any, server: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield every client's seeded ILoRA-S state: ``cv/<key>`` at the client's rank."""
    import torch

    from ilora.seeding import generator
    from ilora.types import RoundInfo

    shapes: dict[int, dict[str, torch.Size]] = {}
    for client in exp.clients:
        if client.rank not in shapes:  # the payload's control variates at this rank
            payload = exp.algorithm.download(server, client, RoundInfo(1, exp.cfg.seed))
            cv = {k: v.shape for k, v in payload.tensors.items() if k.startswith("cv/")}
            shapes[client.rank] = cv
        g = generator(exp.cfg.seed, "bench-scale-state", client.cid)
        yield client.cid, {k: torch.randn(s, generator=g) for k, s in shapes[client.rank].items()}


def worker(config: str, overrides: list[str], out_dir: Path) -> Row:
    """Run one scale setting in this process; return its figures (module docstring)."""
    import torch

    from ilora import config as config_mod
    from ilora.bench import memory
    from ilora.engine.checkpoint import Checkpoint
    from ilora.engine.setup import build
    from ilora.engine.simulation import run
    from ilora.lora.state import template

    t0 = time.perf_counter()
    cfg = config_mod.load(config, overrides)
    exp = build(cfg)
    built = time.perf_counter()
    server = exp.algorithm.server_init(template(exp.model), exp.clients, cfg.lora, cfg.seed)
    sizes: list[int] = []
    seeded_states = _measured(_states(exp, server), sizes)
    states, index = _seed_store(cfg.fed.client_store, seeded_states, out_dir)
    seeded = time.perf_counter()
    resume = Checkpoint(0, server, states, [], torch.get_rng_state(), store_index=index)
    rss_seeded, peak_setup = memory.current_rss(), memory.peak_rss()
    memory.reset_peak()
    cpu, mark = [], [time.process_time()]

    def on_round(_: object) -> None:  # this process's CPU seconds of the round
        cpu.append(time.process_time() - mark[0])
        mark[0] = time.process_time()

    history = run(cfg, exp=exp, resume=resume, store_dir=out_dir, on_round=on_round).history
    peak_rounds = memory.peak_rss()
    walls = [r.wall_s for r in history.records]
    return {
        "clients": len(exp.clients),
        "store": cfg.fed.client_store,
        "sampled_per_round": history.records[0].clients["sampled"],
        "rounds": len(walls),
        "round_s_median": statistics.median(walls),
        "round_s_min": min(walls),
        "round_s_max": max(walls),
        "round_cpu_s_median": statistics.median(cpu),
        "round_cpu_s_min": min(cpu),
        "round_cpu_s_max": max(cpu),
        "peak_rss_bytes": max(peak_setup, peak_rounds),
        "peak_rss_rounds_bytes": peak_rounds,
        "rss_after_seed_bytes": rss_seeded,
        "state_bytes_per_client": sum(sizes) / len(exp.clients),
        "build_s": built - t0,
        "seed_s": seeded - built,
    }


def _seed_store(
    store: str, seeded: Iterator[tuple[int, Any]], out_dir: Path
) -> tuple[dict[int, Any], Any]:
    """Put every seeded client state in ``store``: ``(in-memory states, disk index or None)``."""
    from ilora.engine.clientstore import DiskStore

    if store != "disk":
        return dict(seeded), None
    disk = DiskStore(out_dir, keep=0)
    disk.write_many(seeded)
    return {}, disk.snapshot()


def _measured(items: Iterator[tuple[int, Any]], sizes: list[int]) -> Iterator[tuple[int, Any]]:
    """Yield ``items`` (client states), appending each state's tensor bytes to ``sizes``."""
    for cid, state in items:
        sizes.append(sum(t.numel() * t.element_size() for t in state.values()))
        yield cid, state


def measure(
    config: str,
    base: tuple[str, ...],
    clients: tuple[int, ...],
    stores: tuple[str, ...],
    sampled: int,
    rounds: int,
    threads: int,
    log: Callable[[str], None],
) -> list[Row]:
    """Return one row per client count and store, each measured in a fresh process."""
    rows = []
    for n in clients:
        for store in stores:
            overrides = scale_overrides(base, n, sampled, rounds, store)
            spec = {"config": config, "overrides": overrides, "threads": threads}
            with tempfile.TemporaryDirectory(prefix="ilora-scale-") as tmp:
                spec["dir"] = tmp  # the disk store's files, removed after the run
                cmd = [sys.executable, "-m", "ilora.bench.scale", json.dumps(spec)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"scale run {n} clients {store} failed:\n{res.stderr[-3000:]}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            log(
                f"scale {n} clients, {store} store: peak RSS {row['peak_rss_bytes'] / 2**30:.2f} "
                f"GiB, {row['round_s_median']:.3f} s per round"
            )
            rows.append(row)
    return rows


def _main(spec_json: str) -> None:
    import torch

    spec = json.loads(spec_json)
    torch.set_num_threads(int(spec["threads"]))
    row = worker(spec["config"], spec["overrides"], Path(spec["dir"]))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1])
