"""Experiment configuration: nested dataclasses are the schema; YAML files are instances.

Every field has a default and a help string; ``__post_init__`` validates. Loading is strict: an
unknown key, a wrong type or an out-of-range value raises ``ConfigError`` naming the dotted path
and the fix. ``--set fed.rounds=3`` overrides any dotted path (the value is parsed as YAML).

The sections live in ``federation`` (data, fed, faults, dp) and ``training`` (train, eval, log);
``experiment`` joins them; ``loading`` reads and checks files; every name is exported here.
"""

from __future__ import annotations

from ilora.config.experiment import ExperimentConfig
from ilora.config.experiment import algorithm_args
from ilora.config.experiment import to_dict
from ilora.config.experiment import to_yaml
from ilora.config.federation import FAULT_KINDS
from ilora.config.federation import DataConfig
from ilora.config.federation import DPConfig
from ilora.config.federation import FaultConfig
from ilora.config.federation import FedConfig
from ilora.config.loading import build
from ilora.config.loading import load
from ilora.config.loading import set_dotted
from ilora.config.training import EvalConfig
from ilora.config.training import LogConfig
from ilora.config.training import MLflowConfig
from ilora.config.training import TrainConfig
from ilora.config.yaml_text import ConfigError
from ilora.config.yaml_text import parse_yaml

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
    "to_yaml",
]
