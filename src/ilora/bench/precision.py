"""``ilora bench precision``: collect the fp32-vs-bf16 demo runs into ``results/precision/``.

The runs are ``ilora compare`` directories, one per precision, of the same config, methods and
seeds (``RUNS/fp32`` and ``RUNS/bf16``; the commands are in :data:`COMMANDS`). Each finished run
(``summary.json``) becomes one row of ``runs.csv``: method, seed, the precision the run resolved
(its ``manifest.json``), final global and personal accuracy, rounds and wall seconds. The report
(``ilora.report.precision``) pairs the two precisions by seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ilora.bench.resultfiles import blank_missing
from ilora.bench.resultfiles import labelled_runs
from ilora.bench.resultfiles import write_results

PRECISIONS = ("fp32", "bf16")
COMMANDS = tuple(
    f"OMP_NUM_THREADS=1 ilora compare configs/demo.yaml --algorithms ilora,ilora-s,fedit,"
    f"centralized --seeds 0,1,2,3,4 --set train.precision={p} --out runs/precision/{p}"
    for p in PRECISIONS
)


def run_row(run_dir: Path, precision: str) -> dict[str, Any]:
    """Return the ``runs.csv`` row of one finished run directory.

    Raises:
        ValueError: if the run resolved another precision than its directory says.

    """
    summary = json.loads((run_dir / "summary.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    resolved = manifest.get("precision", "fp32")
    if resolved != precision:
        raise ValueError(f"{run_dir} ran in {resolved}, not {precision}")
    return {
        "algorithm": config["algorithm"],
        "seed": manifest["seed"],
        "precision": resolved,
        "final_accuracy": summary["final_accuracy"],
        "personal_accuracy": blank_missing(summary.get("final_personal_accuracy")),
        "rounds": summary["rounds"],
        "wall_s": round(float(summary["wall_s"]), 3),
    }


def collect(runs: Path) -> list[dict[str, Any]]:
    """Return a row for every finished run under ``runs/<precision>/``, sorted.

    Raises:
        FileNotFoundError: if no run has finished.

    """
    rows = labelled_runs(runs, PRECISIONS, run_row)
    return sorted(rows, key=lambda r: (r["algorithm"], r["seed"], r["precision"]))


def export(runs: Path, out: Path) -> list[str]:
    """Write ``out/runs.csv`` and ``out/meta.json`` from the runs; return the file names."""
    rows = collect(runs)
    return write_results(out, {"runs.csv": rows}, quick=False, runs=str(runs), made_by=COMMANDS)
