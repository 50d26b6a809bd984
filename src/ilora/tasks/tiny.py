"""A tiny synthetic image task for unit tests and the smoke config: no asset needed.

``tiny-image`` draws one ``(1, 8, 8)`` prototype per class and makes each example its class's
prototype plus Gaussian noise. ``TinyConvNet`` (``ilora.models.tiny_convnet``, about 2.4k
parameters) has two 1x1 convolutions and a hidden ``nn.Linear`` for LoRA to target, then the
``classifier`` head. Data, backbone and head all come from ``ilora.seeding.generator`` with
explicit parts: bitwise reproducible, and the global RNG is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import ClassVar

from ilora.seeding import generator
from ilora.tasks.base import ArrayDataset
from ilora.tasks.base import TaskData
from ilora.tasks.options import bounded
from ilora.tasks.options import check_bounds

if TYPE_CHECKING:
    from torch import nn

TINY_SIZE = 8  # image side in pixels


def synthetic_images(
    num: int, num_classes: int, noise: float, seed: int, split: str
) -> ArrayDataset:
    """Return ``num`` noisy copies of the class prototypes, classes balanced and shuffled.

    Args:
        num: number of examples ``N``.
        num_classes: number of classes ``K``.
        noise: standard deviation of the Gaussian noise added to the prototypes.
        seed: data seed; the prototypes depend on it only, so they are shared by the splits.
        split: split name, a seed part of the labels and the noise.

    Returns:
        ``pixels`` ``(N, 1, 8, 8)`` float32 and labels ``(N,)`` int64.

    """
    import torch

    shape = (num_classes, 1, TINY_SIZE, TINY_SIZE)
    prototypes = torch.randn(shape, generator=generator(seed, "tiny-image", "prototypes"))
    gen = generator(seed, "tiny-image", split)
    labels = (torch.arange(num) % num_classes)[torch.randperm(num, generator=gen)]  # (N,)
    eps = torch.randn((num, 1, TINY_SIZE, TINY_SIZE), generator=gen)  # (N, 1, 8, 8)
    return ArrayDataset({"pixels": prototypes[labels] + noise * eps}, labels)


@dataclass(frozen=True)
class TinyImage:
    """Synthetic 8x8 one-channel images: class prototypes plus noise, on ``TinyConvNet``."""

    name: ClassVar[str] = "tiny-image"
    lora_targets: ClassVar[tuple[str, ...]] = (r"^pw[12]$", r"^fc$")
    head: ClassVar[tuple[str, ...]] = (r"^classifier\.",)

    num_train: int = bounded(256, "training examples", 1, 100_000)
    num_test: int = bounded(128, "test examples", 1, 100_000)
    num_classes: int = bounded(4, "number of classes", 2, 100)
    noise: float = bounded(1.0, "std of the noise added to the unit-normal prototypes", 0.0, 100.0)
    seed: int = bounded(0, "seed of the data and of the backbone", 0, 2**63 - 1)

    def __post_init__(self) -> None:
        check_bounds(self)

    def load(self) -> TaskData:
        """Generate both splits.

        Returns:
            ``pixels`` ``(N, 1, 8, 8)`` float32, labels ``(N,)`` int64, class names ``c0``, ...

        """
        args = (self.num_classes, float(self.noise), self.seed)
        train = synthetic_images(self.num_train, *args, "train")
        test = synthetic_images(self.num_test, *args, "test")
        return TaskData(train, test, tuple(f"c{i}" for i in range(self.num_classes)))

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return a ``TinyConvNet`` whose backbone depends on the task's ``seed`` only.

        Args:
            num_classes: number of classes.
            seed: seeds the head.

        Returns:
            The model, ``forward(pixels) -> (B, num_classes)``.

        """
        from ilora.models.tiny_convnet import TinyConvNet

        return TinyConvNet(num_classes, seed, backbone_seed=self.seed)
