"""``ilora bench quality``: every method on the same settings, several seeds, resumable.

The grid is algorithm x rank setting (:data:`RANK_SETTINGS`) x Dirichlet alpha x seed, per task,
each run a preset ``<preset>/<task>.yaml`` plus overrides. The centralized line (pooled data,
which does not depend on the partition) runs once per task, rank setting and seed, at the
preset's own alpha. Cells run through :mod:`ilora.bench.jobs`, the pool the protocol uses: a run
whose directory already holds a finished run of the identical config is skipped, so an
interrupted grid continues where it stopped, and a run the engine stopped is recorded in
``stopped.json`` and not tried again (unless ``--rerun``). Runs go to
``<runs>/<task>/<ranks>-a<alpha>/<algorithm>-seed<seed>/``; the result files
(:func:`write_results`) are ``runs.csv`` (one row per run), ``rounds.csv`` (one row per round)
and ``meta.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.bench import resultfiles
from ilora.bench.jobs import Job
from ilora.bench.protocol import CENTRALIZED
from ilora.bench.protocol import check_presets
from ilora.bench.protocol import check_rank_settings

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

    def job(self, cell: Cell) -> Job:
        """Return ``cell`` as a run of the shared pool (:mod:`ilora.bench.jobs`)."""
        overrides = (*cell.overrides(), *self.extra)
        return Job(cell.label(), self.preset_path(cell.task), overrides, cell.run_dir(self.runs))

    def config(self, cell: Cell) -> config_mod.ExperimentConfig:
        return self.job(cell).config()


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
        job = grid.job(cell)
        summary = job.summary()
        if not summary:
            continue
        history, keys = job.history(), _cell_keys(cell)
        runs.append(
            {
                **keys,
                **resultfiles.summary_columns(summary, ("bytes_up", "bytes_down")),
                "run_dir": job.run_dir.as_posix(),
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
