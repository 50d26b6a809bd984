"""ILoRA: federated LoRA fine-tuning under heterogeneous ranks, data and reliability.

The public names are loaded on first use (PEP 562), so ``import ilora.report`` (which renders
results files and must not import torch) does not pull in the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from ilora.api import load_config
    from ilora.api import run
    from ilora.config import ExperimentConfig
    from ilora.engine.history import History

__all__ = ["ExperimentConfig", "History", "__version__", "load_config", "run"]
__version__ = "0.1.0"

_LAZY = {
    "load_config": "ilora.api",
    "run": "ilora.api",
    "ExperimentConfig": "ilora.config",
    "History": "ilora.engine.history",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is used."""
    if name not in _LAZY:
        raise AttributeError(f"module 'ilora' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
