"""The task protocol: data, a pretrained model with a fresh head, and where LoRA goes.

A task is a frozen dataclass registered in ``TASKS``; its fields are its options (``task_args``
in a config), each with a help string. Data is held in memory as tensors (text is tokenized once
at load time), so the engine can slice any client's share without a data loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import ClassVar
from typing import Protocol

from ilora.assets import AssetMissingError as AssetMissingError  # raised by every task
from ilora.tasks.catalog import TASKS as TASKS  # re-exported: defined without torch

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


@dataclass(frozen=True)
class ArrayDataset:
    """Examples as tensors with a common first dimension ``N``.

    Attributes:
        inputs: keyword inputs of the model, each ``(N, ...)`` (``input_ids``, ``pixels``, ...).
        labels: ``(N,)`` int64 class ids.
        groups: optional ``(N,)`` natural group id per example (movie, user) for ``by_group``.

    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name, t in self.inputs.items():
            if t.shape[0] != n:
                raise ValueError(f"input {name!r} has {t.shape[0]} rows, labels have {n}")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"groups has {len(self.groups)} rows, labels have {n}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray | torch.Tensor) -> ArrayDataset:
        """Return the examples at ``idx`` (in that order)."""
        import numpy as np
        import torch

        index = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        groups = None if self.groups is None else self.groups[index.numpy()]
        return ArrayDataset(
            {k: v[index] for k, v in self.inputs.items()}, self.labels[index], groups
        )


@dataclass(frozen=True)
class TaskData:
    """A task's train and test splits and its class names."""

    train: ArrayDataset
    test: ArrayDataset
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class DataPeek:
    """What a task's data check found, read without tokenizers or models (``ilora validate``).

    Attributes:
        labels: ``(N,)`` int64 class ids of the training examples (what is partitioned).
        groups: optional ``(N,)`` group ids of the same examples.
        class_names: the classes, in id order.
        source: the file the labels came from, for messages.

    """

    labels: np.ndarray
    groups: np.ndarray | None
    class_names: tuple[str, ...]
    source: str


class Task(Protocol):
    """What the engine needs from a task.

    ``build_model`` returns a module whose ``forward(**inputs)`` gives logits ``(B, C)``;
    its pretrained weights are loaded from a local path, never downloaded. The head is created
    with ``torch.Generator`` seeded by ``seed`` so every client and the server start from the
    same head. A task reading user files also has ``peek() -> DataPeek``, which checks them
    cheaply (no tokenizer, no model) so ``ilora validate`` and ``ilora run`` refuse bad data
    before anything slow starts.
    """

    name: ClassVar[str]

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """Regexes matched against full module names (a class constant in most tasks)."""
        ...

    head: ClassVar[tuple[str, ...]]  # regexes of parameter names trained and FedAvg-ed

    def load(self) -> TaskData: ...

    def build_model(self, num_classes: int, seed: int) -> nn.Module: ...
