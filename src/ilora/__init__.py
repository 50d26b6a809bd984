"""ILoRA: federated LoRA fine-tuning under heterogeneous ranks, data and reliability."""

from ilora.api import load_config, run
from ilora.config import ExperimentConfig
from ilora.engine.history import History

__all__ = ["ExperimentConfig", "History", "__version__", "load_config", "run"]
__version__ = "0.1.0"
