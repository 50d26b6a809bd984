"""Check the bytes per round that finished runs measured against the analytic formulas.

For every run directory under ``RUNS`` (``ilora compare`` output), recompute the analytic
download/upload bytes of each round (``ilora.bench.comm``: the model's adapted layer shapes, the
clients' ranks and the engine's seeded sampler, from the run's own ``config.yaml``) and compare
them with ``history.jsonl``. Prints a markdown table: per algorithm, the mean bytes per round
measured and analytic (MB = 2**20 bytes) and the largest relative deviation over all rounds
and seeds. Building the model loads the pretrained weights once per distinct setting; no
training runs.

Run: ``.venv/bin/python benchmarks/comm.py runs/demo-all``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ilora import config
from ilora.bench.comm import Shapes, run_bytes, shapes_of
from ilora.engine.setup import build
from ilora.lora.state import template

MB = 2**20
Pair = tuple[int, int]  # (download, upload) bytes of one round


def _setting(cfg: config.ExperimentConfig) -> tuple[Shapes, dict[int, int], bool]:
    """Return the layer shapes, the clients' ranks and ``pooled_data`` of ``cfg``."""
    exp = build(cfg)
    ranks = {c.cid: c.rank for c in exp.clients}
    return shapes_of(template(exp.model), cfg.train.train_head), ranks, exp.algorithm.pooled_data


def _compare(run_dir: Path) -> tuple[str, list[Pair], list[Pair]]:
    cfg = config.load(run_dir / "config.yaml")
    shapes, ranks, pooled = _setting(cfg)
    fed = cfg.fed
    expected = run_bytes(cfg.algorithm, shapes, ranks, fed.fraction, cfg.seed, fed.rounds, pooled)
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    measured = [(h["bytes_down"], h["bytes_up"]) for h in map(json.loads, lines)]
    return cfg.algorithm, measured, expected


def _mean_mb(pairs: list[Pair], i: int) -> float:
    return sum(p[i] for p in pairs) / len(pairs) / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a directory of finished run directories")
    args = parser.parse_args()
    found: dict[str, tuple[list[Pair], list[Pair], int]] = {}
    for summary in sorted(args.runs.glob("*/summary.json")):
        alg, measured, expected = _compare(summary.parent)
        m, e, n = found.get(alg, ([], [], 0))
        found[alg] = (m + measured, e + expected, n + 1)
    print(
        "| algorithm | runs | down MB/round measured | analytic | up MB/round measured | "
        "analytic | max deviation |"
    )
    print("|---|---|---|---|---|---|---|")
    for alg, (measured, expected, n) in sorted(found.items()):
        dev = max(
            abs(m[i] - e[i]) / e[i]
            for m, e in zip(measured, expected, strict=True)
            for i in (0, 1)
            if e[i] > 0
        )
        print(
            f"| {alg} | {n} | {_mean_mb(measured, 0):.4f} | {_mean_mb(expected, 0):.4f} | "
            f"{_mean_mb(measured, 1):.4f} | {_mean_mb(expected, 1):.4f} | {100 * dev:.3f}% |"
        )


if __name__ == "__main__":
    main()
