"""Every algorithm module is imported here so that its registration runs; nothing else."""

from ilora.algorithms import centralized, fedit, fedsa_lora, ilora

__all__ = ["centralized", "fedit", "fedsa_lora", "ilora"]
