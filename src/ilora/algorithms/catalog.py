"""The algorithm names: each is registered in ``ALGORITHMS`` with the class that implements it.

This table is where a name meets its module. The module is imported only when its name is
first looked up (``ALGORITHMS.get``), so listing the names (``ilora list algorithms``) and
importing this package cost no torch; the module's ``@register`` then stores the class (and
its preset: ``ilora-s`` is ``ilora`` with ``control_variates=True``), checked against this table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ilora.registry import Registry

if TYPE_CHECKING:
    from ilora.algorithms.base import Algorithm

ALGORITHMS: Registry[type[Algorithm[Any]]] = Registry("algorithm")

_ALGORITHM_CLASSES = {
    "ce-lora": "ilora.algorithms.ce_lora:CELoRA",
    "centralized": "ilora.algorithms.centralized:Centralized",
    "fedex-lora": "ilora.algorithms.fedex_lora:FedExLoRA",
    "fedit": "ilora.algorithms.fedit:FedIT",
    "fedlease": "ilora.algorithms.fedlease:FedLEASE",
    "fedloru": "ilora.algorithms.fedloru:FedLoRU",
    "fedsa-lora": "ilora.algorithms.fedsa_lora:FedSALoRA",
    "ffa-lora": "ilora.algorithms.ffa_lora:FFALoRA",
    "fl-tac": "ilora.algorithms.fl_tac:FLTAC",
    "flasc": "ilora.algorithms.flasc:FLASC",
    "flexlora": "ilora.algorithms.flexlora:FlexLoRA",
    "flora": "ilora.algorithms.flora:FLoRA",
    "frlora": "ilora.algorithms.frlora:FRLoRA",
    "fslora": "ilora.algorithms.fslora:FSLoRA",
    "hetlora": "ilora.algorithms.hetlora:HetLoRA",
    "ilora": "ilora.algorithms.ilora:ILoRA",
    "ilora-s": "ilora.algorithms.ilora:ILoRA",
    "lora-fair": "ilora.algorithms.lora_fair:LoRAFAIR",
    "mfedloru": "ilora.algorithms.mfedloru:MFedLoRU",
    "pfedloru": "ilora.algorithms.pfedloru:PFedLoRU",
}

for _name, _target in _ALGORITHM_CLASSES.items():
    ALGORITHMS.register_lazy(_name, _target)
