"""The run directory (DESIGN.md §2): config, manifest, per-round history, summary, adapter.

Every file is written atomically (temporary file, fsync, rename) or appended line by line with
fsync, so a crash never leaves a half-written file behind; ``checkpoints/`` holds the last two
round checkpoints (``engine.checkpoint``) from which ``ilora run --resume DIR`` continues;
``client-state/`` the clients' state files under ``fed.client_store: disk``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

import ilora
from ilora.config import ExperimentConfig
from ilora.config import to_yaml
from ilora.engine import checkpoint
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.compute import resolve
from ilora.engine.headcenter import FOLDED_NOTE
from ilora.engine.headcenter import HeadCenter
from ilora.engine.headcenter import fold_head
from ilora.engine.history import RoundRecord
from ilora.engine.history import append_jsonl
from ilora.engine.history import strict_json
from ilora.engine.history import write_bytes_atomic
from ilora.engine.history import write_json_atomic
from ilora.engine.loggers import RoundLogger
from ilora.engine.loggers import make_loggers
from ilora.engine.privacy import noise_source
from ilora.engine.simulation import RunResult
from ilora.lora import keys
from ilora.types import LocalSetup


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


CHECKPOINTS = "checkpoints"
STORE_DIR = "client-state"  # engine.clientstore.DiskStore's files (fed.client_store: disk)
RUN_FILES = ("config.yaml", "history.jsonl", "summary.json", CHECKPOINTS)


class RunExistsError(FileExistsError):
    """``--out`` names a directory that already holds a run; the message offers the fixes."""


def refuse_existing_run(out: Path) -> None:
    """Raise unless ``out`` is free for a new run (missing, or holding no run's files).

    Raises:
        RunExistsError: naming ``out`` and offering ``--resume`` or ``--overwrite``.

    """
    if not any((out / name).exists() for name in RUN_FILES):
        return
    state = "a finished run" if (out / "summary.json").is_file() else "an unfinished run"
    raise RunExistsError(
        f"--out {out} already holds {state}; continue it with `ilora run --resume {out}`, "
        "replace it with --overwrite, or choose another --out"
    )


def new_run_dir(root: Path, stem: str) -> Path:
    """Return ``root/<stem>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... if that exists."""
    base = root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunWriter:
    """Writes one run directory as the run goes.

    Pass ``on_round`` and ``on_checkpoint`` to the engine. With ``resume`` (the checkpoint a run
    continues from) the directory's history is cut back to that checkpoint and the manifest
    records the resumption; otherwise the directory starts afresh. Use it as a context manager:
    a run that raises before :meth:`finish` ends its tracking runs as failed (MLflow ``FAILED``)
    instead of leaving them running.
    """

    def __init__(self, out: Path, cfg: ExperimentConfig, resume: Checkpoint | None = None) -> None:
        self.out, self.cfg = out, cfg
        self.store_dir = out / STORE_DIR  # fed.client_store disk: pass to the engine's run
        # optional tracking (log: section); off by default
        self.loggers: list[RoundLogger] = make_loggers(cfg, out)
        out.mkdir(parents=True, exist_ok=True)
        if resume is not None:  # the history up to the checkpoint; later lines are redone
            lines = "".join(strict_json(r.to_json()) + "\n" for r in resume.records)
            _write_text_atomic(out / "history.jsonl", lines)
            self.manifest = json.loads((out / "manifest.json").read_text())
            self.manifest.setdefault("resumed", []).append(
                {"round": resume.round, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            )
            write_json_atomic(out / "manifest.json", self.manifest)
            return
        (out / "history.jsonl").unlink(missing_ok=True)
        (out / "summary.json").unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # never resume another run's state
        shutil.rmtree(self.store_dir, ignore_errors=True)
        _write_text_atomic(out / "config.yaml", to_yaml(cfg))
        device, precision = resolve(cfg.train.device, cfg.train.precision)  # what auto chose
        self.manifest = {
            "ilora": ilora.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()} ({os.cpu_count()} cpus)",
            "seed": cfg.seed,
            "device": device,
            "precision": precision,
            "git_revision": _git_revision(),
            "start": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if cfg.dp.enabled:  # where the noise came from (a reproducible one is not private)
            self.manifest["dp_noise"] = noise_source(cfg.dp)
        write_json_atomic(out / "manifest.json", self.manifest)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        """End the tracking runs of a run that did not finish (their status: failed)."""
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.close(None)

    def on_round(self, record: RoundRecord) -> None:
        append_jsonl(self.out / "history.jsonl", record.to_json())
        for logger in self.loggers:
            logger.log_round(record)

    def on_checkpoint(self, ckpt: Checkpoint) -> None:
        checkpoint.save(self.out / CHECKPOINTS, ckpt)

    def finish(self, result: RunResult) -> dict[str, Any]:
        """Write summary.json, the adapter and the manifest's end time; return the summary."""
        summary = result.history.summary()
        write_json_atomic(self.out / "summary.json", summary)
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.close(summary)
        save_adapter(result.setup, self.cfg, self.out / "adapter", result.head_center)
        write_json_atomic(self.out / LABELS, label_map(self.cfg))
        self.manifest["end"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json_atomic(self.out / "manifest.json", self.manifest)
        return summary


LABELS = "labels.json"


def label_map(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Return ``{"id2label": {"0": name, ...}, "label2id": {name: 0, ...}}`` of ``cfg``'s task.

    The task's data is the one the run used (cached by ``load_data``, so not read again).
    """
    from ilora.engine.setup import load_data
    from ilora.engine.setup import make_task

    names = load_data(make_task(cfg.task, cfg.task_args)).class_names  # type: ignore[arg-type]
    return {
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }


def save_adapter(
    setup: LocalSetup, cfg: ExperimentConfig, out: Path, centre: HeadCenter | None = None
) -> None:
    """Save the global adapter in PEFT's layout (safetensors + ``adapter_config.json``).

    Factors are named ``base_model.model.<module>.lora_A.weight`` (module paths of the model the
    task builds); the head goes under ``modules_to_save``. A dense residual (FLoRA, ILoRA's init
    offset), which PEFT cannot express, is saved beside it in ``ilora_residual.safetensors``. A
    model with no factors at all (FLoRA merges everything) gets the residual, the head in
    ``ilora_head.safetensors`` and ``ilora_adapter.json`` instead of the PEFT files. With the
    run's ``train.center_head`` ``centre``, the head saved is the plain one the run trained,
    bias ``b - W c`` (``engine.headcenter.fold_head``), as ``ilora_head_center.json`` records.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / FOLDED_NOTE).unlink(missing_ok=True)
    factors = setup.factors if centre is None else fold_head(setup.factors, centre)
    tensors, modules, rank = {}, [], 0
    for key, t in sorted(factors.items()):
        parsed = keys.parse(key)
        if parsed is not None and parsed[1] in ("lora_A", "lora_B"):
            tensors[f"base_model.model.{parsed[0]}.{parsed[1]}.weight"] = t.contiguous()
            modules.append(parsed[0])
            rank = int(t.shape[0]) if parsed[1] == "lora_A" else rank
        elif keys.is_param(key):
            tensors[f"base_model.model.{key}"] = t.contiguous()
    if centre is not None:
        _write_text_atomic(out / FOLDED_NOTE, _folded_note(centre))
    if setup.residual:
        save_file(
            {k: v.contiguous() for k, v in setup.residual.items()},
            str(out / "ilora_residual.safetensors"),
        )
    if not modules:  # a merged-only model (FLoRA): no LoRA factors for PEFT to hold
        save_file(tensors, str(out / "ilora_head.safetensors"))
        note = {
            "format": "ilora-dense",
            "files": ["ilora_residual.safetensors", "ilora_head.safetensors"],
            "note": "the global model is the base plus a dense residual per layer; no LoRA factors",
        }
        _write_text_atomic(out / "ilora_adapter.json", json.dumps(note, indent=2, sort_keys=True))
        return
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = _peft_config(cfg, setup, sorted(set(modules)), rank)
    _write_text_atomic(out / "adapter_config.json", json.dumps(config, indent=2, sort_keys=True))


def _peft_config(
    cfg: ExperimentConfig, setup: LocalSetup, modules: list[str], rank: int
) -> dict[str, object]:
    """Return PEFT's ``adapter_config.json`` of an adapter of ``rank`` on ``modules``."""
    lora = cfg.lora
    alpha = lora.alpha * rank / lora.rank if lora.alpha_scales_with_rank else lora.alpha
    heads = sorted({k.rsplit(".", 1)[0] for k in setup.factors if keys.is_param(k)})
    return {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "use_rslora": lora.rslora,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "bias": "none",
        "modules_to_save": heads,
        "task_type": None,
        "base_model_name_or_path": cfg.task,
        "rank_pattern": {},
        "alpha_pattern": {},
        "fan_in_fan_out": False,
        "init_lora_weights": True,
    }


def _folded_note(centre: HeadCenter) -> str:
    """Return ``ilora_head_center.json``: the head saved has ``train.center_head``'s centre in."""
    note = {
        "module": centre.module,
        "folded": f"{centre.module}.bias = b - W c: the run's head read its input minus c",
        "center_norm": float(centre.center.norm()),
    }
    return json.dumps(note, indent=2, sort_keys=True)
