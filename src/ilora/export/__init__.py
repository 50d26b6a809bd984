"""``ilora export RUN --format peft|merged``: a finished run's global model for other tools.

The run's model is rebuilt exactly (its config, the task's pretrained model, the saved adapter,
residual and head), then written in one of two forms. The rebuilt head is plain: a run with
``train.center_head`` saved its head with the centre folded into the bias (``b - W c``,
``engine.headcenter``), so both forms compute the trained model without ILoRA's hook.

* ``peft`` (:mod:`ilora.export.peft`): an adapter directory that plain ``peft`` loads onto the
  real base model. PEFT holds a rank-``r`` pair ``s·B A`` per layer. What it cannot hold (a
  dense residual such as ILoRA's init offset or FLoRA's merged update, a ``lora_C``, a rank
  mask, a nested or routed update) is folded into a copy of the base weights written beside
  the adapter, and ``base_model_name_or_path`` points there; ``ilora_export.json`` says which
  layers were folded.
* ``merged`` (:mod:`ilora.export.merged`): the full model with every update merged in and the
  head, loadable without ILoRA for text (``AutoModelForSequenceClassification``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ilora import config as config_mod
from ilora.config import ConfigError
from ilora.config import ExperimentConfig
from ilora.engine.headcenter import FOLDED_NOTE
from ilora.engine.headcenter import fold_head
from ilora.lora.inject import _set_submodule
from ilora.lora.inject import inject
from ilora.lora.layer import LoRALinear
from ilora.lora.state import adapted
from ilora.lora.state import load_setup
from ilora.tasks.base import Task
from ilora.types import LocalSetup
from ilora.types import TensorDict

__all__ = ["Rebuilt", "folded_copy", "peft_pair", "read_adapter", "rebuild"]

PREFIX = "base_model.model."


@dataclass
class Rebuilt:
    """A finished run's global model, rebuilt: config, task, model (eval mode), class names."""

    cfg: ExperimentConfig
    task: Task
    model: nn.Module
    class_names: tuple[str, ...]


def _strip(key: str) -> str:
    return key[len(PREFIX) :] if key.startswith(PREFIX) else key


def read_adapter(adapter: Path) -> LocalSetup:
    """Read a run's ``adapter/`` directory back into the setup it was saved from.

    Raises:
        ConfigError: if the directory holds no adapter.

    """
    factors: TensorDict = {}
    found = False
    for name in ("adapter_model.safetensors", "ilora_head.safetensors"):
        if (adapter / name).is_file():
            found = True
            for key, t in load_file(str(adapter / name)).items():
                bare = _strip(key)
                module, _, kind = bare.removesuffix(".weight").rpartition(".")
                if bare.endswith(".weight") and kind in ("lora_A", "lora_B"):
                    factors[f"{module}.{kind}"] = t.flatten(1)  # a conv's (r, d, 1, 1) too
                else:
                    factors[bare] = t  # the head
    if not found:
        raise ConfigError(f"{adapter} holds no saved adapter; is the run finished?")
    residual_file = adapter / "ilora_residual.safetensors"
    residual = load_file(str(residual_file)) if residual_file.is_file() else {}
    return LocalSetup(factors, residual)


def _class_names(run: Path, cfg: ExperimentConfig, task: Task) -> tuple[str, ...]:
    labels = run / "labels.json"
    if labels.is_file():
        id2label: dict[str, str] = json.loads(labels.read_text())["id2label"]
        return tuple(id2label[str(i)] for i in range(len(id2label)))
    from ilora.engine.setup import load_data

    return load_data(task).class_names  # type: ignore[arg-type]  # runs older than labels.json


def rebuild(run: Path) -> Rebuilt:
    """Rebuild the final global model of the finished run in ``run``.

    Raises:
        ConfigError: if ``run`` is not a finished run directory.

    """
    from ilora.engine.setup import make_task

    if not (run / "config.yaml").is_file() or not (run / "summary.json").is_file():
        raise ConfigError(f"{run} is not a finished run directory (config.yaml, summary.json)")
    cfg = config_mod.load(run / "config.yaml")
    task = make_task(cfg.task, cfg.task_args)
    names = _class_names(run, cfg, task)
    model = task.build_model(len(names), cfg.seed)
    inject(model, cfg.lora, cfg.lora.targets or task.lora_targets, head=task.head)
    load_setup(model, _run_setup(run, cfg))
    return Rebuilt(cfg, task, model.eval(), names)


def _run_setup(run: Path, cfg: ExperimentConfig) -> LocalSetup:
    """Return the run's saved setup with a plain head (``train.center_head``'s centre folded).

    A centred run's ``adapter/`` holds the folded head (``ilora_head_center.json`` says so); one
    saved before the fold existed holds the raw head: its centre is recomputed, as the run did,
    by building the experiment (seeded: the same examples), and folded here.
    """
    adapter = run / "adapter"
    setup = read_adapter(adapter)
    if not cfg.train.center_head or (adapter / FOLDED_NOTE).is_file():
        return setup
    from ilora.engine.setup import build

    centre = build(cfg).head_center
    return setup if centre is None else replace(setup, factors=fold_head(setup.factors, centre))


def peft_pair(layer: LoRALinear) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """Return ``(A, B, s)`` if PEFT can hold the layer's low-rank update exactly, else ``None``.

    PEFT's LoRA adds ``s·B A``; a ``lora_C``, rank mask, nested or routed update is beyond it
    (the layer's whole update is then folded into the base). A residual is folded either way.
    """
    plain = all(
        getattr(layer, kind) is None for kind in ("lora_C", "rank_mask", "router", "outer_A")
    )
    if not plain or layer.lora_A is None or layer.lora_B is None:
        return None
    return layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling


def folded_copy(model: nn.Module, merge_all: bool) -> tuple[nn.Module, list[str]]:
    """Return a copy of ``model`` without LoRA wrappers and the names of the layers folded in.

    Each layer's residual, and its whole update where PEFT cannot hold it (``merge_all``:
    every update), is added to its base weight; everything else is untouched.
    """
    out = copy.deepcopy(model)
    folded = []
    with torch.no_grad():
        for name, layer in adapted(out).items():
            if merge_all or peft_pair(layer) is None:
                delta = layer.delta_weight()
            else:
                delta = layer.residual if layer.residual is not None else torch.zeros(0)
            if delta.any():
                layer.base_weight().add_(delta.to(layer.base_weight().dtype))
                folded.append(name)
            _set_submodule(out, name, layer.base)
    return out, folded
