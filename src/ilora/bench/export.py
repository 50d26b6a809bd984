"""``ilora export-results``: a compare directory's finished runs as result files (``ilora report``).

Writes ``runs.csv`` (one row per run, with the LoRA learning rate ``lr`` its config resolved),
``rounds.csv`` (one row per round of every run) and
``meta.json`` (the commands that made the runs, the shared setting and a few facts about the
task's data). The heavy run directories stay under ``runs/``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.bench import resultfiles
from ilora.bench.rundirs import read_runs

VARYING = ("algorithm", "seed")  # what differs between the runs of one comparison


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
    """Return the setting's LoRA rate: the one most methods share (ties: the first met).

    ``rates`` holds one rate per method. A stored ``config.yaml`` holds the rate its method ran
    at (a tuned-rates file's ``per_algorithm.<name>.train.lr`` merged in), not the config's own;
    the methods such a file does not list all keep the config's rate, so the most common rate
    stands for it (counted per method, so a method run with more seeds weighs no more).
    """
    counts = Counter(rates)
    return max(counts, key=lambda r: (counts[r], -rates.index(r)))


def shared_setting(run_dirs: list[Path]) -> dict[str, Any]:
    """Return the config every run shares (``algorithm`` and ``seed`` removed).

    The runs may differ in ``train.lr`` (a per-method rate, ``runs.csv`` column ``lr``); the
    setting's ``train.lr`` is then :func:`setting_rate` of the methods' rates.

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
    first["train"]["lr"] = setting_rate(list(rates.values()))
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
    setting = shared_setting([runs_dir / r["dir"] for r in runs])
    cfg = config_mod.load(runs_dir / runs[0]["dir"] / "config.yaml")
    resultfiles.write_meta(
        dest,
        False,
        sources=sources,
        notes=notes,
        runs_dir=runs_dir.as_posix(),
        setting=setting,
        data=data_facts(cfg),
    )
    return len(rows)
