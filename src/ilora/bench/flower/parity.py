"""``ilora bench flower-parity``: every registered algorithm on the embedded engine and on Flower.

The Flower side is ``AlgorithmStrategy`` + the ``ClientApp`` exchanging real Flower messages
through ``LocalGrid`` (in-process); both run ``configs/smoke.yaml`` (4 clients, ranks 2 and
4, Dirichlet 0.5) for :data:`ROUNDS` rounds with a personal test share per client.
Writes ``parity.csv`` and ``meta.json`` to ``--out`` (default ``results/flower/parity``): per
algorithm, whether the global model (factors, head, residual) and the history (bytes, counts,
every metric) are bitwise equal.

Run: ``ilora bench flower-parity``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ilora.engine.simulation import RunResult

CONFIG = Path("configs/smoke.yaml")
ROUNDS = 2
OVERRIDES = ["data.local_test_fraction=0.2", "eval.subset=0", f"fed.rounds={ROUNDS}"]


def same_model(a: RunResult, b: RunResult) -> bool:
    """Return True if both runs end with bitwise equal factors and residual."""
    import torch

    for part in ("factors", "residual"):
        x, y = getattr(a.setup, part), getattr(b.setup, part)
        if sorted(x) != sorted(y) or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def history(result: RunResult) -> list[dict[str, Any]]:
    """Return the run's per-round records without their wall times (which always differ)."""
    records = [r.to_json() for r in result.history.records]
    for r in records:
        r.pop("wall_s")
    return records


def compare(name: str) -> dict[str, Any]:
    """Run ``name`` on both runtimes; return its ``parity.csv`` row."""
    from ilora import config
    from ilora.engine.setup import build
    from ilora.engine.simulation import run
    from ilora.flower import codec
    from ilora.flower.client import make_client_app
    from ilora.flower.grid import LocalGrid
    from ilora.flower.strategy import AlgorithmStrategy

    cfg = config.load(CONFIG, [f"algorithm={name}", *OVERRIDES])
    embedded = run(cfg, exp=build(cfg))
    nodes = [{"partition-id": i} for i in range(cfg.data.num_clients)]
    grid = LocalGrid(make_client_app(), nodes)
    exp = build(codec.config_from_text(codec.config_to_text(cfg)))
    flower = AlgorithmStrategy(exp).run(grid)
    ranks = sorted(set(cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed)))
    return {
        "algorithm": name,
        "ranks": " ".join(map(str, ranks)),
        "identical_model": same_model(embedded, flower),
        "identical_history": history(embedded) == history(flower)
        and embedded.history.final == flower.history.final,
        "final_accuracy": flower.history.final.get("accuracy", float("nan")),
    }


def run(out: Path) -> list[Path]:
    """Compare every registered algorithm; write ``parity.csv`` and ``meta.json`` to ``out``.

    Returns the paths written.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    import ilora.algorithms  # noqa: F401  (registers every method)
    from ilora import config
    from ilora.algorithms.base import ALGORITHMS
    from ilora.bench.resultfiles import write_results

    rows = [compare(name) for name in ALGORITHMS.names()]
    for row in rows:
        print(row)
    clients = config.load(CONFIG, OVERRIDES).data.num_clients
    names = write_results(
        out, {"parity.csv": rows}, False, config=str(CONFIG), rounds=ROUNDS, clients=clients
    )
    return [out / name for name in names]
