"""``ilora bench comm``: bytes per round per method, measured by the engine vs the formulas.

For a finished run directory, recompute the analytic download/upload bytes of every round
(:mod:`ilora.bench.comm` over the algorithm's declared formula: the model's adapted layer
shapes, the clients' ranks, the engine's seeded sampler, the algorithm's hyperparameters and,
for FedLEASE, the number of experts the run chose) from the run's own ``config.yaml`` and
compare them with its ``history.jsonl``.
A run whose client sampling was private (DP noise) is checked only when its bytes do not depend
on which clients were sampled (:func:`ilora.bench.comm.sample_free`); otherwise the check is
refused, since the sample is a secret its records do not reveal.
Building the model loads the pretrained weights (once per distinct setting); nothing trains.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.traffic import Shapes
from ilora.algorithms.traffic import shapes_of
from ilora.bench.comm import run_bytes
from ilora.bench.comm import sample_free
from ilora.engine.sampling import private_sampling
from ilora.engine.setup import build
from ilora.lora.state import template

MB = 2**20
Pair = tuple[int, int]  # (download, upload) bytes of one round


@dataclass(frozen=True)
class CommRow:
    """One algorithm: mean MB per round measured and analytic, and the worst deviation."""

    algorithm: str
    runs: int
    down_measured: float
    down_analytic: float
    up_measured: float
    up_analytic: float
    max_deviation: float  # relative, over every round and direction of every run


def _hyperparameters(cfg: config.ExperimentConfig, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the algorithm's hyperparameters and what the run chose (FedLEASE's ``M``)."""
    alg = create_algorithm(cfg.algorithm, config.algorithm_args(cfg))
    hp = {f.name: getattr(alg, f.name) for f in dataclasses.fields(alg)}  # type: ignore[arg-type]
    chosen = [h["num_experts"] for h in history if "num_experts" in h]
    if chosen:
        hp["num_experts"] = chosen[-1]
    return hp


def check_run(run_dir: Path, shapes_cache: dict[str, Shapes]) -> tuple[str, list[Pair], list[Pair]]:
    """Return ``(algorithm, measured, analytic)`` bytes per round of one finished run.

    ``shapes_cache`` keeps the model's shapes per task setting, so the model is built once.
    """
    cfg = config.load(run_dir / "config.yaml")
    key = json.dumps([cfg.task, cfg.task_args, cfg.lora.targets, cfg.train.train_head])
    if key not in shapes_cache:
        shapes_cache[key] = shapes_of(template(build(cfg).model), cfg.train.train_head)
    ranks = dict(enumerate(cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed)))
    pooled = ALGORITHMS.get(cfg.algorithm).pooled_data
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    hp = _hyperparameters(cfg, history)
    fraction, rounds = cfg.fed.fraction, len(history)
    reported = [{k: v for k, v in h.items() if isinstance(v, float)} for h in history]
    if private_sampling(cfg) and not sample_free(
        cfg.algorithm, shapes_cache[key], ranks, rounds, hp, reported
    ):
        raise config.ConfigError(
            f"{run_dir}: its client sampling was private (DP noise) and its bytes depend on "
            "which clients were sampled (ranks or first contacts differ), so they cannot be "
            "checked; check a run without DP noise or with dp.reproducible_noise: true"
        )
    expected = run_bytes(
        cfg.algorithm, shapes_cache[key], ranks, fraction, cfg.seed, rounds, pooled, hp, reported
    )
    measured = [(h["bytes_down"], h["bytes_up"]) for h in history]
    return cfg.algorithm, measured, expected


def _mean_mb(pairs: list[Pair], i: int) -> float:
    return sum(p[i] for p in pairs) / len(pairs) / MB


def check_runs(root: Path) -> list[CommRow]:
    """Return one :class:`CommRow` per algorithm over the finished runs under ``root``."""
    found: dict[str, tuple[list[Pair], list[Pair], int]] = {}
    cache: dict[str, Shapes] = {}
    for summary in sorted(root.glob("*/summary.json")):
        alg, measured, expected = check_run(summary.parent, cache)
        m, e, n = found.get(alg, ([], [], 0))
        found[alg] = (m + measured, e + expected, n + 1)
    rows = []
    for alg, (measured, expected, n) in sorted(found.items()):
        deviation = max(
            (
                abs(m[i] - e[i]) / e[i]
                for m, e in zip(measured, expected, strict=True)
                for i in (0, 1)
                if e[i] > 0
            ),
            default=0.0,
        )
        down = _mean_mb(measured, 0), _mean_mb(expected, 0)
        up = _mean_mb(measured, 1), _mean_mb(expected, 1)
        rows.append(CommRow(alg, n, *down, *up, deviation))
    return rows


def markdown(rows: list[CommRow]) -> str:
    """Return the rows as a markdown table (MB = 2**20 bytes)."""
    lines = [
        "| algorithm | runs | MB down / round (measured) | analytic | MB up / round (measured) "
        "| analytic | max deviation |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.algorithm} | {r.runs} | {r.down_measured:.4f} | {r.down_analytic:.4f} | "
        f"{r.up_measured:.4f} | {r.up_analytic:.4f} | {100 * r.max_deviation:.3f}% |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[CommRow]) -> str:
    """Return the rows as CSV (MB per round; deviation as a fraction)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in dataclasses.fields(CommRow)])
    writer.writeheader()
    writer.writerows(dataclasses.asdict(r) for r in rows)
    return buf.getvalue()
