"""``ilora bench quality``: every method on the same settings, several seeds, resumable.

The grid is algorithm x rank setting (:data:`RANK_SETTINGS`) x Dirichlet alpha x seed, per task,
each run a preset ``<preset>/<task>.yaml`` plus overrides. The centralized line (pooled data,
which does not depend on the partition) runs once per task, rank setting and seed, at the
preset's own alpha. A run whose directory already holds a finished run of the identical config
is skipped, so an interrupted grid continues where it stopped. Runs go to
``<runs>/<task>/<ranks>-a<alpha>/<algorithm>-seed<seed>/``; the result files
(:func:`write_results`) are ``runs.csv`` (one row per run), ``rounds.csv`` (one row per round)
and ``meta.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.bench import resultfiles
from ilora.bench.protocol import CENTRALIZED
from ilora.bench.protocol import check_presets
from ilora.bench.protocol import check_rank_settings
from ilora.bench.runner import finished
from ilora.bench.runner import run_to_dir

RANK_SETTINGS: dict[str, tuple[str, ...]] = {
    "homogeneous": ("lora.rank_policy=uniform", "lora.rank=8"),
    "heterogeneous": ("lora.rank_policy=cycle", "lora.ranks=[2,4,8,16]"),
}


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    task: str
    ranks: str
    alpha: float
    seed: int
    algorithm: str

    def overrides(self) -> list[str]:
        """Return the ``--set`` overrides that turn the task's preset into this run."""
        return [
            f"algorithm={self.algorithm}",
            f"seed={self.seed}",
            f"data.partition_args.alpha={self.alpha}",
            *RANK_SETTINGS[self.ranks],
        ]

    def run_dir(self, root: Path) -> Path:
        return (
            root / self.task / f"{self.ranks}-a{self.alpha:g}" / f"{self.algorithm}-seed{self.seed}"
        )

    def label(self) -> str:
        return f"{self.task} {self.ranks} a={self.alpha:g} seed {self.seed} {self.algorithm}"


@dataclass(frozen=True)
class Grid:
    """The axes of a quality grid and where its presets and runs live."""

    tasks: tuple[str, ...]
    algorithms: tuple[str, ...]  # federated methods; the centralized line is always added
    ranks: tuple[str, ...]
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    preset: Path  # directory of <task>.yaml
    runs: Path
    extra: tuple[str, ...] = ()  # further --set overrides for every run

    def __post_init__(self) -> None:
        check_rank_settings(self.ranks, RANK_SETTINGS)
        check_presets(self.tasks, self.preset_path, "configs/bench-quality/")

    def preset_path(self, task: str) -> Path:
        return self.preset / f"{task}.yaml"

    def centralized_alpha(self, task: str) -> float:
        """Return the preset's Dirichlet alpha: where the centralized line's runs are made."""
        cfg = config_mod.load(self.preset_path(task))
        alpha = cfg.data.partition_args.get("alpha", self.alphas[0])
        return float(alpha)

    def cells(self) -> list[Cell]:
        """Return every run in priority order: task by task, setting by setting, all seeds.

        Within a task the rank settings come in the order given and the preset's own alpha
        (where the centralized line runs) first, then the other alphas in the order given; a
        setting's seeds run together. So a stopped grid holds whole settings with every seed,
        the first task's headline setting (e.g. heterogeneous ranks, alpha 0.3) first.
        """
        out = []
        for task in self.tasks:
            home = self.centralized_alpha(task)
            alphas = sorted(self.alphas, key=lambda a: (a != home, self.alphas.index(a)))
            for ranks in self.ranks:
                for alpha in alphas:
                    for seed in self.seeds:
                        if alpha == alphas[0]:
                            out.append(Cell(task, ranks, home, seed, CENTRALIZED))
                        out += [
                            Cell(task, ranks, alpha, seed, alg)
                            for alg in self.algorithms
                            if alg != CENTRALIZED
                        ]
        return out

    def config(self, cell: Cell) -> config_mod.ExperimentConfig:
        return config_mod.load(self.preset_path(cell.task), [*cell.overrides(), *self.extra])


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_cell(grid: Grid, cell: Cell) -> tuple[Cell, str]:
    """Run one cell (in a worker); return it with a one-line outcome.

    A run that raises is reported and left unfinished (no ``summary.json``), so the rest of
    the grid goes on and a later invocation tries it again.
    """
    start = time.perf_counter()
    try:
        summary = run_to_dir(grid.config(cell), cell.run_dir(grid.runs))
    except Exception as err:  # noqa: BLE001  (one failed run must not stop the grid)
        return cell, f"FAILED after {time.perf_counter() - start:.1f} s: {err!r}"
    acc = 100 * float(summary["final_accuracy"])
    return cell, f"accuracy {acc:.1f}% in {time.perf_counter() - start:.1f} s"


def run_grid(
    grid: Grid,
    todo: Sequence[Cell],
    workers: int,
    report: Callable[[str], None],
    on_done: Callable[[int], None] | None = None,
) -> None:
    """Run ``todo`` with ``workers`` processes of one thread each (in-process for one worker).

    ``report`` receives one line per finished run; ``on_done(k)`` is called after the k-th.
    """

    def done(k: int, cell: Cell, outcome: str) -> None:
        report(f"[{k}/{len(todo)}] {cell.label()}: {outcome}")
        if on_done:
            on_done(k)

    if workers <= 1:
        _init_worker()
        for k, cell in enumerate(todo, 1):
            done(k, *_run_cell(grid, cell))
        return
    ctx = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        futures = [pool.submit(_run_cell, grid, cell) for cell in todo]
        for k, future in enumerate(as_completed(futures), 1):
            done(k, *future.result())


def pending(grid: Grid, cells: Sequence[Cell], rerun: bool) -> list[Cell]:
    """Return the cells without a finished run of the identical config (all with ``rerun``)."""
    return [c for c in cells if rerun or not finished(grid.config(c), c.run_dir(grid.runs))]


def _read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return summary, [json.loads(line) for line in lines]


def _cell_keys(cell: Cell) -> dict[str, Any]:
    return {
        "task": cell.task,
        "ranks": cell.ranks,
        "alpha": cell.alpha,
        "seed": cell.seed,
        "algorithm": cell.algorithm,
    }


def result_rows(
    grid: Grid, cells: Sequence[Cell]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return ``(runs, rounds)`` rows of the finished cells (unfinished ones are left out)."""
    runs, rounds = [], []
    for cell in cells:
        run_dir = cell.run_dir(grid.runs)
        if not finished(grid.config(cell), run_dir):
            continue
        summary, history = _read_run(run_dir)
        keys = _cell_keys(cell)
        runs.append(
            {
                **keys,
                **resultfiles.summary_columns(summary, ("bytes_up", "bytes_down")),
                "run_dir": run_dir.as_posix(),
            }
        )
        rounds += list(_round_rows(keys, history))
    return runs, rounds


def _round_rows(keys: dict[str, Any], history: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    up = down = 0
    for rec in history:
        up, down = up + int(rec["bytes_up"]), down + int(rec["bytes_down"])
        yield {
            **keys,
            "round": rec["round"],
            **resultfiles.round_metric_columns(rec),
            "train_loss": resultfiles.blank_missing(rec.get("train_loss")),
            "bytes_up_cum": up,
            "bytes_down_cum": down,
            "wall_s": round(float(rec["wall_s"]), 3),
        }


def write_results(
    grid: Grid, cells: Sequence[Cell], out: Path, quick: bool, **extra: Any
) -> tuple[int, int]:
    """Write ``runs.csv``, ``rounds.csv`` and ``meta.json``; return (finished, expected) runs."""
    runs, rounds = result_rows(grid, cells)
    if runs:
        resultfiles.write_rows(out / "runs.csv", runs)
        resultfiles.write_rows(out / "rounds.csv", rounds)
    settings = {t: config_mod.to_dict(config_mod.load(grid.preset_path(t))) for t in grid.tasks}
    resultfiles.write_meta(
        out,
        quick,
        tasks=list(grid.tasks),
        algorithms=[a for a in grid.algorithms if a != CENTRALIZED],
        ranks={name: list(RANK_SETTINGS[name]) for name in grid.ranks},
        alphas=list(grid.alphas),
        seeds=list(grid.seeds),
        centralized_alpha={t: grid.centralized_alpha(t) for t in grid.tasks},
        extra_overrides=list(grid.extra),
        presets={t: grid.preset_path(t).as_posix() for t in grid.tasks},
        settings=settings,
        runs_dir=grid.runs.as_posix(),
        runs_expected=len(cells),
        runs_finished=len(runs),
        threads_per_run=1,
        omp_num_threads=os.environ.get("OMP_NUM_THREADS", ""),
        **extra,
    )
    return len(runs), len(cells)
