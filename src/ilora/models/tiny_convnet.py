"""The model of the ``tiny-image`` task (``ilora.tasks.tiny``): a small conv net, no asset.

Kept apart from the task so that the task's options are checked (``ilora validate``) without
importing torch: the task module imports this one when it builds the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ilora.models.mobilenet_v2 import build_empty
from ilora.models.mobilenet_v2 import seeded_init_
from ilora.models.mobilenet_v2 import seeded_linear


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
