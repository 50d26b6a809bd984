"""A tiny synthetic image task for unit tests and the smoke config: no asset needed.

``tiny-image`` draws one ``(1, 8, 8)`` prototype per class and makes each example its class's
prototype plus Gaussian noise. ``TinyConvNet`` (about 2.4k parameters) has two 1x1 convolutions
and a hidden ``nn.Linear`` for LoRA to target, then the ``classifier`` head. Data, backbone and
head all come from ``ilora.seeding.generator`` with explicit parts: bitwise reproducible, and the
global RNG is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ilora.config.fields import option
from ilora.models.mobilenet_v2 import build_empty, seeded_init_, seeded_linear
from ilora.seeding import generator
from ilora.tasks.base import ArrayDataset, TaskData
from ilora.tasks.fashion_mnist import check_range

TINY_SIZE = 8  # image side in pixels


class TinyConvNet(nn.Module):
    """Conv 3x3 -> two 1x1 convs -> 4x4 pool -> ``fc`` -> ``classifier``, all ReLU.

    Args:
        num_classes: number of output classes ``C``.
        seed: the head is drawn from ``generator(seed, "head")``.
        backbone_seed: the rest from ``generator(backbone_seed, "tiny-image", "init", name)``,
            the same for every client, like pretrained weights.
        width: channels ``D`` of the convolutions (``fc`` maps ``16 D`` to ``2 D``).

    """

    def __init__(self, num_classes: int, seed: int, backbone_seed: int = 0, width: int = 8) -> None:
        super().__init__()
        self.stem = build_empty(lambda: nn.Conv2d(1, width, 3, padding=1))
        self.pw1 = build_empty(lambda: nn.Conv2d(width, width, 1))
        self.pw2 = build_empty(lambda: nn.Conv2d(width, width, 1))
        self.fc = build_empty(lambda: nn.Linear(16 * width, 2 * width))
        for name in ("stem", "pw1", "pw2", "fc"):
            seeded_init_(getattr(self, name), backbone_seed, "tiny-image", "init", name)
        self.classifier = seeded_linear(2 * width, num_classes, seed, "head")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(pixels.float()))  # (B, 1, H, W) -> (B, D, H, W)
        x = torch.relu(self.pw1(x))  # (B, D, H, W)
        x = torch.relu(self.pw2(x))  # (B, D, H, W)
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)  # (B, D, 4, 4) -> (B, 16 D)
        x = torch.relu(self.fc(x))  # (B, 2 D)
        return self.classifier(x)  # type: ignore[no-any-return]  # (B, C)


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
    shape = (num_classes, 1, TINY_SIZE, TINY_SIZE)
    prototypes = torch.randn(shape, generator=generator(seed, "tiny-image", "prototypes"))
    gen = generator(seed, "tiny-image", split)
    labels = (torch.arange(num) % num_classes)[torch.randperm(num, generator=gen)]  # (N,)
    eps = torch.randn((num, 1, TINY_SIZE, TINY_SIZE), generator=gen)  # (N, 1, 8, 8)
    return ArrayDataset({"pixels": prototypes[labels] + noise * eps}, labels)


@dataclass(frozen=True)
class TinyImage:
    """Synthetic 8x8 one-channel images: class prototypes plus noise, on ``TinyConvNet``."""

    name: ClassVar[str]
    lora_targets: ClassVar[tuple[str, ...]] = (r"^pw[12]$", r"^fc$")
    head: ClassVar[tuple[str, ...]] = (r"^classifier\.",)

    num_train: int = option(256, "training examples (1..100000)")
    num_test: int = option(128, "test examples (1..100000)")
    num_classes: int = option(4, "number of classes (2..100)")
    noise: float = option(1.0, "std of the noise added to the unit-normal prototypes")
    seed: int = option(0, "seed of the data and of the backbone")

    def __post_init__(self) -> None:
        check_range("tiny-image", "num_train", self.num_train, 1, 100_000)
        check_range("tiny-image", "num_test", self.num_test, 1, 100_000)
        check_range("tiny-image", "num_classes", self.num_classes, 2, 100)
        check_range("tiny-image", "noise", self.noise, 0.0, 100.0)
        check_range("tiny-image", "seed", self.seed, 0, 2**63 - 1)

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
        return TinyConvNet(num_classes, seed, backbone_seed=self.seed)
