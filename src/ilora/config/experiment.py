"""One federated run's config (every section), and its plain mapping."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import yaml

from ilora.config.federation import DataConfig
from ilora.config.federation import DPConfig
from ilora.config.federation import FaultConfig
from ilora.config.federation import FedConfig
from ilora.config.fields import option
from ilora.config.training import EvalConfig
from ilora.config.training import LogConfig
from ilora.config.training import TrainConfig
from ilora.config.yaml_text import ConfigError
from ilora.lora.spec import LoRASpec


@dataclass(frozen=True)
class ExperimentConfig:
    """One federated run."""

    algorithm: str = option("ilora", "`ilora list algorithms`")
    algorithm_args: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "the algorithm's hyperparameters"}
    )
    per_algorithm: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "hyperparameters by algorithm name, merged over algorithm_args when that "
            "algorithm runs (one config for `ilora compare`); a `train` mapping inside a "
            "section goes over `train` (e.g. a tuned lr), under --set"
        },
    )
    task: str = option("tiny-text", "`ilora list tasks`")
    task_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "the task's options"})
    seed: int = option(0, "run seed: partition, inits, sampling, dropout")
    lora: LoRASpec = field(default_factory=LoRASpec)
    data: DataConfig = field(default_factory=DataConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Return a plain YAML-ready mapping of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def to_yaml(cfg: ExperimentConfig) -> str:
    """Return the config as YAML text (a run's ``config.yaml``, Flower's handshake)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def algorithm_args(cfg: ExperimentConfig) -> dict[str, Any]:
    """Return the hyperparameters of ``cfg.algorithm``: ``algorithm_args`` and its section."""
    own = cfg.per_algorithm.get(cfg.algorithm, {})
    if not isinstance(own, dict):
        raise ConfigError(f"per_algorithm.{cfg.algorithm} must be a mapping, got {own!r}")
    hyper = {k: v for k, v in own.items() if k != "train"}  # train: merged into cfg.train
    return {**cfg.algorithm_args, **hyper}
