"""Parity table: every registered algorithm on the embedded engine and on Flower, compared.

The Flower side is ``AlgorithmStrategy`` + the ``ClientApp`` exchanging real Flower messages
through ``LocalGrid`` (in-process); both run ``configs/smoke.yaml`` (4 clients, ranks 2 and 4,
Dirichlet 0.5) for 2 rounds with a personal test share per client. Writes
``results/flower/parity/parity.csv`` and ``meta.json``: per algorithm, whether the global
model (factors, head, residual) and the history (bytes, counts, every metric) are bitwise equal.

    .venv/bin/python benchmarks/flower_parity.py [--out results/flower/parity]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import torch  # noqa: E402

import ilora.algorithms  # noqa: E402,F401
from ilora import config as config_mod  # noqa: E402
from ilora.algorithms.base import ALGORITHMS  # noqa: E402
from ilora.bench.resultfiles import write_meta, write_rows  # noqa: E402
from ilora.engine.setup import build  # noqa: E402
from ilora.engine.simulation import RunResult, run  # noqa: E402
from ilora.flower import codec  # noqa: E402
from ilora.flower.client import make_client_app  # noqa: E402
from ilora.flower.grid import LocalGrid  # noqa: E402
from ilora.flower.strategy import AlgorithmStrategy  # noqa: E402

OVERRIDES = ["data.local_test_fraction=0.2", "eval.subset=0", "fed.rounds=2"]


def same_model(a: RunResult, b: RunResult) -> bool:
    for part in ("factors", "residual"):
        x, y = getattr(a.setup, part), getattr(b.setup, part)
        if sorted(x) != sorted(y) or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def history(result: RunResult) -> list[dict[str, object]]:
    records = [r.to_json() for r in result.history.records]
    for r in records:
        r.pop("wall_s")
    return records


def compare(name: str) -> dict[str, object]:
    cfg = config_mod.load("configs/smoke.yaml", [f"algorithm={name}", *OVERRIDES])
    embedded = run(cfg, exp=build(cfg))
    grid = LocalGrid(make_client_app(), [{"partition-id": i} for i in range(4)])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/flower/parity"))
    args = parser.parse_args()
    rows = [compare(name) for name in ALGORITHMS.names()]
    write_rows(args.out / "parity.csv", rows)
    meta = write_meta(args.out, quick=False, rounds=2, clients=4)
    print(json.dumps(meta, indent=1))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
