"""One memory measurement of ``ilora bench engine``, run in a fresh process.

``python -m ilora.bench.engine_memory SPEC`` builds the memory setting of a
:class:`~ilora.bench.engine.Plan` with ``SPEC["clients"]`` clients, runs it and prints one JSON
row: peak RSS while building and over the rounds, the model's and a client's adapter bytes. A
fresh process per client count keeps one count's peak out of the next one's.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any

from ilora.bench import memory as rss
from ilora.bench.engine import Plan
from ilora.bench.engine import Row
from ilora.bench.engine import load_config
from ilora.bench.engine import memory_overrides


def memory_worker(plan: Plan, n: int) -> Row:
    """Run the memory setting with ``n`` clients in this process; return its figures."""
    from ilora.engine.setup import build
    from ilora.engine.simulation import run
    from ilora.lora.state import adapted
    from ilora.lora.state import head_names

    t0 = time.perf_counter()
    cfg = load_config(plan.memory_config, memory_overrides(plan, n))
    exp = build(cfg)
    model = exp.model
    tensors = [*model.parameters(), *model.buffers()]
    model_bytes = sum(t.numel() * t.element_size() for t in tensors)
    params = dict(model.named_parameters())
    head = sum(params[k].numel() * 4 for k in head_names(model))
    per_rank = sum(4 * (m.d_in + m.d_out) for m in adapted(model).values())
    adapter = statistics.fmean(c.rank * per_rank + head for c in exp.clients)
    gc.collect()
    built, peak_build = rss.current_rss(), rss.peak_rss()
    rss.reset_peak()  # the rounds' own peak, apart from loading and tokenizing the data
    history = run(cfg, exp=exp).history
    peak_rounds = rss.peak_rss()
    return {
        "clients": n,
        "sampled_per_round": history.records[0].clients["sampled"],
        "rounds": len(history.records),
        "peak_rss_bytes": max(peak_build, peak_rounds),
        "rss_after_build_bytes": built,
        "peak_rss_rounds_bytes": peak_rounds,
        "model_bytes": model_bytes,
        "adapter_bytes": adapter,
        "seconds": time.perf_counter() - t0,
    }


def _memory_main(spec_json: str) -> None:
    import torch

    spec = json.loads(spec_json)
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in spec["plan"].items()
    }
    plan = Plan(**fields)
    torch.set_num_threads(plan.threads)
    print(json.dumps(memory_worker(plan, int(spec["clients"]))), flush=True)


if __name__ == "__main__":
    _memory_main(sys.argv[1])
