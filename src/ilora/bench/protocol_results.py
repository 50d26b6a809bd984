"""The protocol's result files (``results/protocol/``), rebuilt from every finished run on disk.

``tune.csv`` (every variant x rate tried: validation score, the choice, whether the run
finished), ``horizon.csv`` (the
long validation runs: plateau round, the horizon), ``runs.csv`` and ``rounds.csv`` (the
comparison on test, one row per run and per round) and ``meta.json`` (commands, axes, the
decision rules' constants, machine time per phase, summed over invocations).

Rows come from scanning ``<runs>/<task>/{tune,horizon,compare}<suffix>/``, not from one
invocation's axes, so invocations with different variants or settings (the first family in every
setting, the second family in one) add up in one set of files; rows of runs no longer on disk
are kept (:func:`write`). Every decided run's text is kept in ``<out>/records/`` and restored
into an empty runs directory (:mod:`ilora.bench.runrecords`), so the protocol resumes from a
fresh clone. One results directory holds one
tuning setting (``Protocol.tuning_suffix``; ``meta.json`` ``tuning``; a directory written before
that record holds the default one): :func:`check_tuning` refuses to mix two.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ilora import config as config_mod
from ilora.bench import protocol_seconds
from ilora.bench import resultfiles
from ilora.bench import runrecords
from ilora.bench import tuning
from ilora.bench.protocol import RANKS
from ilora.bench.protocol import TUNE_ALPHA
from ilora.bench.protocol import TUNE_RANKS
from ilora.bench.protocol import Protocol
from ilora.bench.protocol import Variant
from ilora.bench.runner import STOPPED

RUN = ("task", "ranks", "alpha", "seed", "variant")
# what a rebuilt row replaces: a variant's whole tuning (its choice reads every rate), a task's
# horizon (the longest plateau), one comparison run (its row and its rounds)
ROW_KEYS = {
    "tune.csv": ("task", "variant"),
    "horizon.csv": ("task",),
    "runs.csv": RUN,
    "rounds.csv": RUN,
}


def _history(run_dir: Path) -> list[dict[str, Any]]:
    if not (run_dir / "summary.json").is_file():
        return []
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def tune_rows(runs: Path, suffix: str = "") -> list[dict[str, Any]]:
    """Return one row per (task, variant, rate) tried, with its score and the choice.

    ``suffix`` names the tuning setting (``Protocol.tuning_suffix``) as the directories do.
    Beside the rule's score and choice, each row holds the score and the choice under every
    longer window of ``tuning.SENSITIVITY_WINDOWS`` (``val_score_lastW``, ``chosen_lastW``):
    the report's sensitivity study of the rule, never used to choose.
    """
    rows = []
    for task_dir in _dirs(runs):
        for variant_dir in _dirs(task_dir / f"tune{suffix}"):
            tried = [d for d in _dirs(variant_dir) if d.name.startswith("lr")]
            metric = Variant.parse(variant_dir.name).metric
            histories = {float(d.name[2:]): (d, _history(d)) for d in tried}
            rule = _scored(histories, metric, tuning.SCORE_WINDOW)
            longer = {w: _scored(histories, metric, w) for w in tuning.SENSITIVITY_WINDOWS}
            for rate, (d, _) in histories.items():
                row = {"task": task_dir.name, "variant": variant_dir.name, "lr": rate}
                row |= {"metric": metric, **_score_cells(rule, rate, "")}
                row["failed"] = int((d / STOPPED).is_file() and math.isnan(rule[0][rate]))
                row["finished"] = int((d / "summary.json").is_file())
                for w, scored in longer.items():
                    row |= _score_cells(scored, rate, f"_last{w}")
                rows.append(row)
    return sorted(rows, key=lambda r: (r["task"], r["variant"], r["lr"]))


Scored = tuple[dict[float, float], float | None]  # each rate's score, the chosen rate


def _scored(histories: dict[float, tuple[Path, list[Any]]], metric: str, window: int) -> Scored:
    """Return every rate's score over the last ``window`` evaluations and the rate chosen."""
    scores = {rate: tuning.score(h, metric, window) for rate, (_, h) in histories.items()}
    finite = [s for s in scores.values() if not math.isnan(s)]
    return scores, tuning.choose(scores) if finite else None


def _score_cells(scored: Scored, rate: float, suffix: str) -> dict[str, Any]:
    scores, chosen = scored
    score = resultfiles.blank_missing(round(scores[rate], 4))
    return {f"val_score{suffix}": score, f"chosen{suffix}": int(rate == chosen)}


def horizon_rows(runs: Path, suffix: str = "") -> list[dict[str, Any]]:
    """Return the long validation runs: their plateau round and each task's horizon."""
    rows = []
    for task_dir in _dirs(runs):
        found = []
        for d in _dirs(task_dir / f"horizon{suffix}"):
            history = _history(d)
            if history:
                cfg = config_mod.load(d / "config.yaml")
                found.append((d.name, cfg, tuning.plateau_round(history)))
        plateaus = [p for _, _, p in found]
        horizon = max(plateaus) if found and None not in plateaus else ""  # type: ignore[type-var]
        for name, cfg, plateau in found:
            rows.append(
                {
                    "task": task_dir.name,
                    "variant": name,
                    "lr": cfg.train.lr,
                    "rounds_run": cfg.fed.rounds,
                    "plateau_round": "" if plateau is None else plateau,
                    "horizon": horizon or cfg.fed.rounds,
                }
            )
    return rows


def run_rows(runs: Path, suffix: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return ``(runs, rounds)`` rows of every finished comparison run."""
    out: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    for task_dir in _dirs(runs):
        for setting in _dirs(task_dir / f"compare{suffix}"):
            for d in _dirs(setting):
                history = _history(d)
                if not history:
                    continue
                keys = _keys(d)
                summary = json.loads((d / "summary.json").read_text())
                out.append({**keys, **resultfiles.summary_columns(summary)})
                rounds += list(_round_rows(keys, history))
    return out, rounds


def _keys(run_dir: Path) -> dict[str, Any]:
    cfg = config_mod.load(run_dir / "config.yaml")
    return {
        "task": cfg.task,
        "ranks": "homogeneous" if cfg.lora.rank_policy == "uniform" else "heterogeneous",
        "alpha": float(run_dir.parent.name.rsplit("-a", 1)[1]),
        "seed": cfg.seed,
        "variant": run_dir.name.rsplit("-seed", 1)[0],
        "algorithm": cfg.algorithm,
        "lr": cfg.train.lr,
    }


def _round_rows(keys: dict[str, Any], history: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for rec in history:
        yield {
            **keys,
            "round": rec["round"],
            **resultfiles.round_metric_columns(rec),
            "train_loss": resultfiles.blank_missing(rec.get("train_loss")),
            "wall_s": round(float(rec["wall_s"]), 3),
        }


def write(out: Path, proto: Protocol, quick: bool, phase: str, wall_s: float) -> int:
    """Write every result file the finished runs support; add ``wall_s`` to ``phase``'s time.

    Each decided run is kept in the records first (``runrecords``). Rows are rebuilt from the
    run directories on disk and replace the rows they stand for (:data:`ROW_KEYS`); every
    other row stays as the files hold it, so a results directory gathers tasks run in
    different places, and a deleted ``runs/`` loses no row. Returns the number of finished
    comparison runs in ``runs.csv``.
    """
    check_tuning(out, proto)
    if proto.records is not None:
        runrecords.keep_all(proto.runs, proto.records)
    suffix = proto.tuning_suffix
    runs, rounds = run_rows(proto.runs, suffix)
    tables = {
        "tune.csv": tune_rows(proto.runs, suffix),
        "horizon.csv": horizon_rows(proto.runs, suffix),
        "runs.csv": runs,
        "rounds.csv": rounds,
    }
    n = 0
    for name, rows in tables.items():
        merged = resultfiles.merge_rows(out / name, rows, ROW_KEYS[name])
        if merged:
            resultfiles.write_rows(out / name, merged)
        n = len(merged) if name == "runs.csv" else n
    _write_meta(out, proto, quick, phase, wall_s, n)
    return n


def tuning_record(proto: Protocol) -> dict[str, Any]:
    """Return the ``meta.json`` record of the protocol's tuning setting."""
    return {"ranks": proto.tune_ranks, "alpha": proto.tune_alpha}


def check_tuning(out: Path, proto: Protocol) -> None:
    """Raise ``ValueError`` when ``out`` holds the results of a protocol tuned elsewhere.

    A ``meta.json`` without a ``tuning`` record was written before the setting was recorded,
    when every protocol was tuned at the default setting (``TUNE_RANKS``, ``TUNE_ALPHA``).
    """
    path = out / "meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    default = {"ranks": TUNE_RANKS, "alpha": TUNE_ALPHA}
    held = meta.get("tuning", default if "rules" in meta else None)
    if held is not None and held != tuning_record(proto):
        raise ValueError(
            f"{out} holds a protocol tuned at {held['ranks']} alpha {held['alpha']:g}, not at "
            f"{proto.tuning_words}; pass --out DIR for this one"
        )


def record_command(out: Path, phase: str) -> None:
    """Add this invocation's command to ``out/meta.json`` before it runs anything.

    An invocation that is stopped writes no result files; its command is on record anyway, so
    ``--phase report`` afterwards lists every command whose runs the results contain.
    """
    path = out / "meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta["commands"] = _with_command(meta.get("commands", {}), phase)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _with_command(commands: dict[str, list[str]], phase: str) -> dict[str, list[str]]:
    """Return ``commands`` with this process's command line added to ``phase`` (once)."""
    line = resultfiles.command_line()
    listed = list(commands.get(phase, []))
    return {**commands, phase: listed if line in listed else [*listed, line]}


def _write_meta(out: Path, proto: Protocol, quick: bool, phase: str, wall_s: float, n: int) -> None:
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    walls = dict(old.get("wall_s_by_phase", {}))
    if wall_s > 0:  # --phase report runs nothing
        walls[phase] = round(walls.get(phase, 0.0) + wall_s, 1)
    by_task = protocol_seconds.by_task(old, proto.runs, proto.tuning_suffix)
    resultfiles.write_meta(
        out,
        quick,
        tasks=sorted({*old.get("tasks", []), *proto.tasks}),
        ranks={name: list(RANKS[name]) for name in RANKS},
        tune_seed=proto.tune_seed,
        tuning=tuning_record(proto),
        rate_grid_ratio=tuning.STEP,
        rules={
            "score_window": tuning.SCORE_WINDOW,
            "max_extensions": tuning.MAX_EXTENSIONS,
            "plateau_window": tuning.PLATEAU_WINDOW,
            "plateau_tol_points": tuning.PLATEAU_TOL,
            "max_rounds": proto.max_rounds,
            "compare_eval_every": proto.compare_every,
        },
        presets={
            **old.get("presets", {}),
            **{t: config_mod.to_dict(config_mod.load(proto.preset(t))) for t in proto.tasks},
        },
        runs_dir=proto.runs.as_posix(),
        runs_finished=n,
        commands=_with_command(old.get("commands", {}), phase),
        wall_s_by_phase=walls,
        run_seconds_by_task=by_task,
        run_seconds_by_phase=protocol_seconds.by_phase(by_task),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS", ""),
    )
