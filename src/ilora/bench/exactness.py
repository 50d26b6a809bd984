"""``ilora bench exactness``: the methods the exactness fixes changed, on the demo, before/after.

Issue 14 made ILoRA exact at mixed ranks (one shared QR-init offset) and gave it the paper's
QR redistribution by default. The method before the fix is still available as options: the
released code's per-rank offset (``offset: per_client``) and the SVD redistribution
(``redistribute: svd``), which were the old defaults. Issue 21 made FedIT, HetLoRA, FedLoRU,
pFedLoRU, FL-TAC and FLASC start a small-rank client at the global model's scale
(``rescale_b``) and FL-TAC keep the best of 10 k-means starts; ``rescale_b: false`` (and
``kmeans_starts: 1``) is the method before (:data:`BEFORE`). The runs are ``ilora compare``
directories of the demo under ``RUNS/<label>``, label = ``<ranks>-<version>``:

* ranks ``mixed``: the demo's cycle of ranks 2/4/8/16; ``equal``: every client at rank 8;
* version ``before``: the old defaults as options (:data:`BEFORE`); ``after``: the defaults.

Each finished run of a method in :data:`BEFORE` becomes a ``runs.csv`` row (accuracies, mean
``agg_error`` and ``download_error``); a run whose options do not match its label is refused.

The quality grid too: ``grid.csv`` pairs the committed grid's rows (:data:`GRID_BEFORE`, made
before the fix) with a re-run of the grid for ILoRA and ILoRA-S (``RUNS/grid/runs.csv``, from
:data:`GRID_COMMAND`), setting by setting and seed by seed; centralized training, which the fix
does not touch, is re-run as well and must come out equal (the control that nothing else moved).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ilora.bench.resultfiles import blank_missing
from ilora.bench.resultfiles import labelled_runs
from ilora.bench.resultfiles import read_rows
from ilora.bench.resultfiles import write_results

CONFIG = "configs/demo.yaml"
OLD_ILORA = {"redistribute": "svd", "offset": "per_client"}  # ILoRA's defaults before the fix
NO_RESCALE = {"rescale_b": False}
BEFORE: dict[str, dict[str, Any]] = {  # each method's defaults before the fixes
    "ilora": OLD_ILORA,
    "ilora-s": OLD_ILORA,
    **dict.fromkeys(("fedit", "hetlora", "fedloru", "pfedloru", "flasc"), NO_RESCALE),
    "fl-tac": {**NO_RESCALE, "kmeans_starts": 1},
}
METHODS = ("ilora", "ilora-s")  # the grid re-run, the equal-rank and the SVD runs
SVD = {"redistribute": "svd"}  # this project's improvement, with the fix's shared offset
RANKS = {"mixed": (), "equal": ("lora.rank_policy=uniform", "lora.rank=8")}
LABELS = (*(f"{r}-{v}" for r in RANKS for v in ("before", "after")), "mixed-svd")
GRID_BEFORE = Path("results/quality/runs.csv")
GRID_COMMAND = (
    "OMP_NUM_THREADS=1 ilora bench quality --algorithms ilora,ilora-s --workers 1 "
    "--out runs/exactness/grid --runs-dir runs/quality-ilora/runs"
)
GRID_KEYS = ("task", "ranks", "alpha", "algorithm", "seed")
GRID_VALUES = ("final_accuracy", "personal_accuracy", "mean_agg_error")


def commands() -> list[str]:
    """Return the ``ilora compare`` command of each label."""
    out = []
    for label in LABELS:
        ranks, version = label.split("-")
        methods = tuple(BEFORE) if label in ("mixed-before", "mixed-after") else METHODS
        for m in methods:
            options = {"before": BEFORE[m], "svd": SVD}.get(version, {})
            sets = [*RANKS[ranks], *(f"per_algorithm.{m}.{k}={str(v).lower()}"
                                     for k, v in options.items())]  # fmt: skip
            seeds = "0,1,2" if ranks == "mixed" and m in METHODS else "0"
            flags = "".join(f" --set {s}" for s in sets)
            out.append(
                f"OMP_NUM_THREADS=1 ilora compare {CONFIG} --algorithms {m} --seeds {seeds}"
                f"{flags} --out runs/exactness/{label}"
            )
    return out


def version_of(config: dict[str, Any]) -> str:
    """Return ``before``, ``after`` or ``svd`` from a run's hyperparameters of its algorithm.

    Raises:
        ValueError: if they are neither the old defaults, nor today's, nor today's with SVD.

    """
    hyper = {**config.get("algorithm_args", {}), **config.get("per_algorithm", {}).get(
        config["algorithm"], {})}  # fmt: skip
    before = BEFORE[config["algorithm"]]
    chosen = {k: hyper.get(k) for k in before}
    if chosen == before:
        return "before"
    if all(v is None for v in chosen.values()):
        return "after"
    if {k: v for k, v in chosen.items() if v is not None} == SVD:
        return "svd"
    raise ValueError(f"options {chosen} are neither the old defaults {before} nor the defaults")


def ranks_of(config: dict[str, Any]) -> str:
    """Return ``mixed`` or ``equal`` from a run's ``lora`` section."""
    return "equal" if config["lora"].get("rank_policy", "uniform") == "uniform" else "mixed"


def run_row(run_dir: Path, label: str) -> dict[str, Any] | None:
    """Return the ``runs.csv`` row of one finished run (None for another method's run).

    Raises:
        ValueError: if the run's ranks or options do not match ``label``.

    """
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if config["algorithm"] not in BEFORE:
        return None
    if f"{ranks_of(config)}-{version_of(config)}" != label:
        raise ValueError(f"{run_dir} does not match its label {label}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "ranks": ranks_of(config),
        "version": version_of(config),
        "algorithm": config["algorithm"],
        "seed": config["seed"],
        "final_accuracy": summary["final_accuracy"],
        "personal_accuracy": blank_missing(summary.get("final_personal_accuracy")),
        "mean_agg_error": blank_missing(summary.get("mean_agg_error")),
        "mean_download_error": blank_missing(summary.get("mean_download_error")),
    }


def collect(runs: Path) -> list[dict[str, Any]]:
    """Return a row for every finished run of a method in :data:`BEFORE`, sorted.

    Raises:
        FileNotFoundError: if no run has finished.

    """
    rows = [r for r in labelled_runs(runs, LABELS, run_row) if r is not None]
    return sorted(rows, key=lambda r: (r["algorithm"], r["ranks"], r["seed"], r["version"]))


def grid_rows(before: Path, after: Path) -> list[dict[str, Any]]:
    """Return the grid rows of ILoRA, ILoRA-S and centralized in both files, version-tagged.

    Only the settings and seeds the re-run finished are kept, from both files.
    """
    tables = {"before": read_rows(before), "after": read_rows(after)}
    wanted = (*METHODS, "centralized")
    done = {tuple(r[k] for k in GRID_KEYS) for r in tables["after"] if r["algorithm"] in wanted}
    return [
        {**{k: r[k] for k in GRID_KEYS}, "version": version, **{k: r[k] for k in GRID_VALUES}}
        for version, rows in tables.items()
        for r in rows
        if tuple(r[k] for k in GRID_KEYS) in done
    ]


def export(runs: Path, out: Path) -> list[str]:
    """Write ``out/runs.csv``, ``out/grid.csv`` (when the grid re-run exists) and ``meta.json``.

    Returns the file names written.
    """
    tables = {"runs.csv": collect(runs)}
    if (runs / "grid" / "runs.csv").is_file():
        tables["grid.csv"] = grid_rows(GRID_BEFORE, runs / "grid" / "runs.csv")
    return write_results(
        out,
        tables,
        quick=False,
        runs=str(runs),
        made_by=[*commands(), GRID_COMMAND],
        svd=SVD,
        grid_before=str(GRID_BEFORE),
        config=CONFIG,
        before=BEFORE,
        ranks={k: list(v) for k, v in RANKS.items()},
    )
