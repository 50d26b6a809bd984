"""Experiment configuration: nested dataclasses are the schema; YAML files are instances.

Every field has a default and a help string; ``__post_init__`` validates. Loading is strict: an
unknown key, a wrong type or an out-of-range value raises ``ConfigError`` naming the dotted path
and the fix. ``--set fed.rounds=3`` overrides any dotted path (the value is parsed as YAML).

The sections live in ``federation`` (data, fed, faults, dp) and ``training`` (train, eval, log);
``experiment`` joins them; ``loading`` reads and checks files; every name is exported here.
"""

from __future__ import annotations

from ilora.config.experiment import ExperimentConfig, algorithm_args, to_dict
from ilora.config.federation import FAULT_KINDS, DataConfig, DPConfig, FaultConfig, FedConfig
from ilora.config.loading import build, load, set_dotted
from ilora.config.training import EvalConfig, LogConfig, MLflowConfig, TrainConfig
from ilora.config.yaml_text import ConfigError, parse_yaml

__all__ = [
    "FAULT_KINDS",
    "ConfigError",
    "DPConfig",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FaultConfig",
    "FedConfig",
    "LogConfig",
    "MLflowConfig",
    "TrainConfig",
    "algorithm_args",
    "build",
    "load",
    "parse_yaml",
    "set_dotted",
    "to_dict",
]
