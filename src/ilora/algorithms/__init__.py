"""The federated LoRA methods, one module each; their names are in :mod:`.catalog`.

Importing this package registers every name without importing a method's module (nor torch):
a module is imported when its name is first looked up (``ALGORITHMS.get``).
"""

from ilora.algorithms.catalog import ALGORITHMS

__all__ = ["ALGORITHMS"]
