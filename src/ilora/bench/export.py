"""``ilora export-results``: a compare directory's finished runs as result files (``ilora report``).

Writes ``runs.csv`` (one row per run, with the LoRA learning rate ``lr`` its config resolved),
``rounds.csv`` (one row per round of every run) and
``meta.json`` (the commands that made the runs, the shared setting and a few facts about the
task's data). The heavy run directories stay under ``runs/``.

The setting's own LoRA rate (``train.lr`` before a method's ``per_algorithm.<name>.train``) is
in no run directory: a stored ``config.yaml`` holds the rate its method ran at. ``ilora
compare`` records it in ``<out>/compare.json`` (:func:`record_setting`, the latest invocation's)
and the export reads it from there; a directory written before that record gets the rate most
methods share (:func:`setting_rate`), and ``meta.json`` says which (``setting_lr_source``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.bench import resultfiles
from ilora.bench.rundirs import read_runs

VARYING = ("algorithm", "seed")  # what differs between the runs of one comparison
RECORD = "compare.json"  # ilora compare's record of the setting, beside its run directories
SOURCES = {
    True: f"recorded by ilora compare ({RECORD})",
    False: f"inferred: the rate most methods share (no {RECORD}: written before the record)",
}


def record_setting(out: Path, config: Path, overrides: Sequence[str]) -> float:
    """Write ``out/compare.json`` with the setting's LoRA rate; return that rate.

    The rate is ``config``'s ``train.lr`` with ``overrides`` applied and no method's
    ``per_algorithm.<name>.train`` merged in: the rate of every method without one of its own.
    """
    rate = config_mod.load(config, [*overrides, "per_algorithm={}"]).train.lr
    record = {"setting_lr": rate, "config": str(config), "overrides": list(overrides)}
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return rate


def recorded_rate(runs_dir: Path) -> float | None:
    """Return the setting's rate ``ilora compare`` recorded in ``runs_dir`` (None: no record)."""
    path = runs_dir / RECORD
    if not path.is_file():
        return None
    rate = json.loads(path.read_text()).get("setting_lr")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
        raise ValueError(f"{path}: setting_lr must be a positive number, got {rate!r}")
    return float(rate)


def data_facts(cfg: config_mod.ExperimentConfig) -> dict[str, Any]:
    """Return the sizes of the task's splits and the test split's majority-class share."""
    from ilora.engine.setup import load_data
    from ilora.engine.setup import make_task

    data = load_data(make_task(cfg.task, cfg.task_args))  # type: ignore[arg-type]
    counts = Counter(int(y) for y in data.test.labels.tolist())
    return {
        "train": len(data.train),
        "test": len(data.test),
        "classes": data.num_classes,
        "majority_test": max(counts.values()) / max(1, len(data.test)),
    }


def setting_rate(rates: list[float]) -> float:
    """Return the setting's LoRA rate inferred: the one most methods share (ties: the first met).

    The fallback for a directory without ``ilora compare``'s record (see the module). ``rates``
    holds one rate per method. A stored ``config.yaml`` holds the rate its method ran at (a
    tuned-rates file's ``per_algorithm.<name>.train.lr`` merged in), not the config's own; the
    methods such a file does not list all keep the config's rate, so the most common rate
    stands for it (counted per method, so a method run with more seeds weighs no more). Wrong
    when most methods have rates of their own that happen to agree.
    """
    counts = Counter(rates)
    return max(counts, key=lambda r: (counts[r], -rates.index(r)))


def shared_setting(run_dirs: list[Path], recorded: float | None = None) -> dict[str, Any]:
    """Return the config every run shares (``algorithm`` and ``seed`` removed).

    The runs may differ in ``train.lr`` (a per-method rate, ``runs.csv`` column ``lr``); the
    setting's ``train.lr`` is then the ``recorded`` rate, or without one :func:`setting_rate`
    of the methods' rates.

    Raises:
        ValueError: if the runs differ in anything but algorithm, seed and ``train.lr``.

    """
    settings, rates = [], {}
    for run_dir in run_dirs:
        cfg = config_mod.to_dict(config_mod.load(run_dir / "config.yaml"))
        rates[cfg["algorithm"]] = float(cfg["train"].pop("lr"))
        settings.append({k: v for k, v in cfg.items() if k not in VARYING})
    first = settings[0]
    for run_dir, other in zip(run_dirs, settings, strict=True):
        if other != first:
            keys = sorted(k for k in first if first[k] != other.get(k))
            raise ValueError(f"{run_dir} differs from the other runs in {keys}; export them apart")
    first["train"]["lr"] = recorded if recorded is not None else setting_rate(list(rates.values()))
    return first


def _events(history: list[dict[str, Any]], kind: str) -> int:
    return sum(int(h.get("clients", {}).get(kind, 0)) for h in history)


def _round_rows(run: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for rec in run["history"]:
        yield {
            "algorithm": run["algorithm"],
            "seed": run["seed"],
            "round": rec["round"],
            **resultfiles.round_metric_columns(rec),
            "bytes_up": rec["bytes_up"],
            "bytes_down": rec["bytes_down"],
            "wall_s": round(float(rec["wall_s"]), 3),
        }


def export_compare(runs_dir: Path, dest: Path, sources: list[str], notes: list[str]) -> int:
    """Write the result files of every finished run under ``runs_dir``; return how many.

    Raises:
        FileNotFoundError: if ``runs_dir`` holds no finished run.
        ValueError: if the runs do not share one setting.

    """
    runs = read_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(f"no finished run (*/summary.json) under {runs_dir}")
    rows = [
        {
            "algorithm": r["algorithm"],
            "seed": r["seed"],
            "lr": config_mod.load(runs_dir / r["dir"] / "config.yaml").train.lr,
            **resultfiles.summary_columns(r),
            "rejected": _events(r["history"], "rejected"),
            "failed": _events(r["history"], "failed"),
            "counts_recorded": int(all("rejected" in h.get("clients", {}) for h in r["history"])),
        }
        for r in runs
    ]
    resultfiles.write_rows(dest / "runs.csv", rows)
    resultfiles.write_rows(dest / "rounds.csv", [x for r in runs for x in _round_rows(r)])
    recorded = recorded_rate(runs_dir)
    setting = shared_setting([runs_dir / r["dir"] for r in runs], recorded)
    cfg = config_mod.load(runs_dir / runs[0]["dir"] / "config.yaml")
    resultfiles.write_meta(
        dest,
        False,
        sources=sources,
        notes=notes,
        runs_dir=runs_dir.as_posix(),
        setting=setting,
        setting_lr_source=SOURCES[recorded is not None],
        data=data_facts(cfg),
    )
    return len(rows)
