"""``ilora bench scaling``: collect the mixed-rank scaling-convention runs into ``results/scaling``.

Issue 21 asks for one scaling convention for mixed-rank runs, measured and chosen on
validation. The runs are ``ilora compare`` directories of the demo, one per convention
(``RUNS/<convention>``, the commands in :func:`commands`), evaluated on the validation split
(``data.validation_fraction``, ``eval.split: validation``), never on test:

* ``alpha-over-r``: ``s(r) = α/r`` (PEFT's and the papers' LoRA), every download rescaled so a
  client starts from the global product (``rescale_b``; the presets' convention);
* ``alpha-prop-r``: ``α_k ∝ r_k`` so ``s = α/r_max`` at every rank (FLoRA's code);
* ``rslora``: ``s(r) = α/√r`` (rsLoRA), α chosen so the rank-``r_max`` scale equals the others'.

Each finished run becomes a ``runs.csv`` row; ``meta.json`` records the overrides and the scale
each rank gets under each convention (computed from :class:`ilora.lora.spec.LoRASpec`), so the
report states no fact of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ilora.bench.resultfiles import blank_missing
from ilora.bench.resultfiles import labelled_runs
from ilora.bench.resultfiles import write_results
from ilora.lora.spec import LoRASpec

CONFIG = "configs/demo.yaml"
METHODS = ("fedit", "hetlora", "ilora")
SEEDS = (0,)
RANKS = (2, 4, 8, 16)  # the demo's cycle of client ranks
VALIDATION = ("data.validation_fraction=0.1", "eval.split=validation")
CONVENTIONS: dict[str, tuple[str, ...]] = {
    "alpha-over-r": (),
    "alpha-prop-r": ("lora.alpha_scales_with_rank=true", "lora.rank=16"),
    "rslora": ("lora.rslora=true", "lora.alpha=4"),
}


def commands() -> list[str]:
    """Return the ``ilora compare`` command of each convention."""
    out = []
    for name, sets in CONVENTIONS.items():
        flags = " ".join(f"--set {s}" for s in (*VALIDATION, *sets))
        out.append(
            f"OMP_NUM_THREADS=1 ilora compare {CONFIG} --algorithms {','.join(METHODS)} "
            f"--seeds {','.join(map(str, SEEDS))} {flags} --out runs/scaling/{name}"
        )
    return out


def spec_of(lora: dict[str, Any]) -> LoRASpec:
    """Return the ``LoRASpec`` of a run's ``lora`` config section (its scaling fields)."""
    keys = ("alpha", "rank", "rslora", "alpha_scales_with_rank")
    return LoRASpec(**{k: lora[k] for k in keys if k in lora})


def overrides(sets: tuple[str, ...]) -> dict[str, Any]:
    """Return the ``lora`` keys a convention's ``--set`` flags change, with their values."""
    pairs = (s.split("=", 1) for s in sets)
    return {key.split(".", 1)[1]: yaml.safe_load(value) for key, value in pairs}


def convention_of(lora: dict[str, Any]) -> str:
    """Return the convention a run's ``lora`` section applies.

    Raises:
        ValueError: if it applies none of :data:`CONVENTIONS` exactly.

    """
    flags = (bool(lora.get("rslora")), bool(lora.get("alpha_scales_with_rank")))
    for name, sets in CONVENTIONS.items():
        o = overrides(sets)
        own = (bool(o.get("rslora")), bool(o.get("alpha_scales_with_rank")))
        if own == flags and all(lora.get(k) == v for k, v in o.items()):
            return name
    raise ValueError(f"lora section {lora} matches none of {list(CONVENTIONS)}")


def run_row(run_dir: Path, convention: str) -> dict[str, Any]:
    """Return the ``runs.csv`` row of one finished run directory.

    Raises:
        ValueError: if the run is not evaluated on validation or applies another convention.

    """
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if config["eval"].get("split") != "validation":
        raise ValueError(f"{run_dir} is evaluated on {config['eval'].get('split')}, not validation")
    if convention_of(config["lora"]) != convention:
        raise ValueError(f"{run_dir} does not apply the convention {convention}")
    return {
        "convention": convention,
        "algorithm": config["algorithm"],
        "seed": config["seed"],
        "validation_accuracy": summary["final_accuracy"],
        "personal_accuracy": blank_missing(summary.get("final_personal_accuracy")),
        "rounds": summary["rounds"],
    }


def collect(runs: Path) -> list[dict[str, Any]]:
    """Return a row for every finished run under ``runs/<convention>/``, sorted.

    Raises:
        FileNotFoundError: if no run has finished.

    """
    rows = labelled_runs(runs, tuple(CONVENTIONS), run_row)
    return sorted(rows, key=lambda r: (r["algorithm"], r["seed"], r["convention"]))


def scales() -> dict[str, dict[str, float]]:
    """Return ``{convention: {rank: scale}}`` at the demo's α, for meta.json."""
    demo = yaml.safe_load(Path(CONFIG).read_text()) if Path(CONFIG).is_file() else {}
    base = {"alpha": float(demo.get("lora", {}).get("alpha", 16.0))}
    out = {}
    for name, sets in CONVENTIONS.items():
        lora = {**base, **overrides(sets)}
        out[name] = {str(r): round(spec_of(lora).scale(r), 4) for r in RANKS}
    return out


def export(runs: Path, out: Path) -> list[str]:
    """Write ``out/runs.csv`` and ``out/meta.json`` from the runs; return the file names."""
    rows = collect(runs)
    return write_results(
        out,
        {"runs.csv": rows},
        quick=False,
        runs=str(runs),
        made_by=commands(),
        config=CONFIG,
        ranks=list(RANKS),
        scales=scales(),
        overrides={k: list(v) for k, v in CONVENTIONS.items()},
        default="alpha-over-r",
    )
