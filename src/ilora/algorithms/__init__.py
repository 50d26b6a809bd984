"""Every algorithm module is imported here so that its registration runs; nothing else."""

from ilora.algorithms import (
    centralized,
    fedex_lora,
    fedit,
    fedsa_lora,
    ffa_lora,
    flexlora,
    flora,
    hetlora,
    ilora,
    lora_fair,
)

__all__ = [
    "centralized",
    "fedex_lora",
    "fedit",
    "fedsa_lora",
    "ffa_lora",
    "flexlora",
    "flora",
    "hetlora",
    "ilora",
    "lora_fair",
]
