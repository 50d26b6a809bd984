"""The task registry and the error of a missing offline asset, importable without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ilora.assets import AssetMissingError as AssetMissingError  # re-exported
from ilora.registry import Registry

if TYPE_CHECKING:
    from ilora.tasks.base import Task

TASKS: Registry[type[Task]] = Registry("task")
