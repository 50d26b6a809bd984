"""The task registry and the error of a missing offline asset, importable without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ilora.registry import Registry

if TYPE_CHECKING:
    from ilora.tasks.base import Task


class AssetMissingError(FileNotFoundError):
    """An offline asset (model or data package) is not installed; the message says how to fix it."""


TASKS: Registry[type[Task]] = Registry("task")
