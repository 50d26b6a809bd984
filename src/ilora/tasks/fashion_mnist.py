"""Fashion-MNIST on an ImageNet MobileNetV2, LoRA on its 34 pointwise (1x1) convolutions.

The data are the IDX files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/*-ubyte.gz``). Images are resized once at load time and kept
as ``uint8`` ``(N, 1, S, S)`` (60k images at 64 px take 246 MB instead of 983 MB as float32);
``ImageClassifier.forward`` scales them to ``[0, 1]``, replicates the channel to RGB and applies
the ImageNet mean/std.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import ClassVar

import numpy as np

from ilora.config.fields import option
from ilora.seeding import np_rng
from ilora.tasks.base import ArrayDataset
from ilora.tasks.base import AssetMissingError
from ilora.tasks.base import TaskData
from ilora.tasks.options import bounded
from ilora.tasks.options import check_bool
from ilora.tasks.options import check_bounds
from ilora.tasks.options import option_error

if TYPE_CHECKING:
    import torch
    from torch import nn

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
# Every 1x1 conv with groups=1 of MobileNetV2: the project conv of block 1, the expand and project
# convs of blocks 2-17 and the last conv features.18.0 (34 in all); no depthwise conv matches.
MOBILENET_V2_LORA_TARGETS = (
    r"^features\.1\.conv\.1$",
    r"^features\.([2-9]|1[0-7])\.conv\.0\.0$",
    r"^features\.([2-9]|1[0-7])\.conv\.2$",
    r"^features\.18\.0$",
)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into an array of its declared shape.

    The header is two zero bytes, a type code (``0x08`` ubyte ... ``0x0E`` float64), the number
    of dimensions ``d``, then ``d`` big-endian uint32 sizes; the data follow, big-endian.

    Args:
        path: the file; read with gzip if it starts with the gzip magic bytes.

    Returns:
        The array in native byte order (``uint8`` for Fashion-MNIST).

    Raises:
        ValueError: if the header is malformed or the data size does not match it.

    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: IDX header says {shape} but holds {len(raw) - offset} bytes")
    data = np.frombuffer(raw, dtype, offset=offset).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def resize_images(images: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images to ``(N, C, size, size)`` with bilinear interpolation.

    Args:
        images: ``uint8`` (rounded back to ``uint8``) or float images.
        size: output height and width.
        chunk: images resized at a time, to bound the float32 working memory.

    Returns:
        The resized images, same dtype; ``images`` itself if already of that size.

    """
    import torch
    import torch.nn.functional as F

    if images.shape[-2:] == (size, size):
        return images
    parts = []
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].float()  # (n, C, H, W)
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)  # (n, C, S, S)
        if images.dtype == torch.uint8:
            y = y.round().clamp(0, 255).to(torch.uint8)
        parts.append(y)
    return torch.cat(parts) if parts else images.new_empty((0, images.shape[1], size, size))


def subset_indices(n_total: int, n_keep: int, *parts: object) -> np.ndarray:
    """Return ``n_keep`` sorted indices of ``range(n_total)``, drawn from ``np_rng(*parts)``.

    Args:
        n_total: number of examples.
        n_keep: how many to keep; ``0`` or ``>= n_total`` keeps all.
        *parts: seed parts.

    Returns:
        ``(n,)`` int64 indices in increasing order.

    """
    if n_keep <= 0 or n_keep >= n_total:
        return np.arange(n_total, dtype=np.int64)
    return np.sort(np_rng(*parts).permutation(n_total)[:n_keep]).astype(np.int64)


def mobilenet_model(pretrained: bool, num_classes: int, seed: int) -> nn.Module:
    """Return MobileNetV2 features with a fresh head drawn from ``generator(seed, "head")``.

    The model of the image tasks (``fashion-mnist``, ``image-npz``).

    Args:
        pretrained: load the packaged ImageNet weights (else a seeded random backbone).
        num_classes: number of classes.
        seed: seeds the head (and the backbone when not ``pretrained``).

    Returns:
        An ``ImageClassifier`` with ``forward(pixels) -> (B, num_classes)``.

    Raises:
        AssetMissingError: if ``pretrained`` and the weights package is not installed.

    """
    from ilora.models.mobilenet_v2 import ImageClassifier
    from ilora.models.mobilenet_v2 import mobilenet_v2_features

    return ImageClassifier(mobilenet_v2_features(pretrained, seed), num_classes, seed)


@dataclass(frozen=True)
class FashionMNIST:
    """Fashion-MNIST (10 classes of 28x28 grayscale clothing images) on MobileNetV2."""

    name: ClassVar[str] = "fashion-mnist"
    lora_targets: ClassVar[tuple[str, ...]] = MOBILENET_V2_LORA_TARGETS
    head: ClassVar[tuple[str, ...]] = (r"^classifier\.",)
    # the model and data in words, for reports (``{field}``: the task's option)
    model_words: ClassVar[str] = "the ImageNet MobileNetV2 (LoRA on its 34 pointwise convolutions)"
    data_words: ClassVar[str] = "Fashion-MNIST resized to {image_size}x{image_size}"

    image_size: int = bounded(32, "side in pixels the 28x28 images are resized to", 32, 64)
    max_train: int = bounded(
        0, "seeded random subset size of the train split, 0 = all", 0, SPLIT_SIZES["train"]
    )
    max_test: int = bounded(
        0, "seeded random subset size of the test split, 0 = all", 0, SPLIT_SIZES["test"]
    )
    data_dir: str = option(
        "/usr/share/datasets/fashion-mnist",
        "directory of the *-ubyte.gz IDX files (apt dataset-fashion-mnist)",
    )
    pretrained: bool = option(True, "start from ImageNet weights (false: seeded random init)")

    def __post_init__(self) -> None:
        check_bounds(self)
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise option_error(self, "data_dir", "not a directory path", "a non-empty path")
        check_bool(self, "pretrained")

    def _paths(self) -> dict[str, tuple[Path, Path]]:
        """Return the image and label file of each split.

        Raises:
            AssetMissingError: if a file is missing, naming the install command.

        """
        root = Path(self.data_dir)
        paths = {s: (root / img, root / lab) for s, (img, lab) in FILES.items()}
        missing = [p.name for pair in paths.values() for p in pair if not p.is_file()]
        if missing:
            raise AssetMissingError(
                f"Fashion-MNIST files not found in {root} (missing: {', '.join(missing)}); "
                "install them with `sudo apt-get install dataset-fashion-mnist` (or run "
                "`make demo`), or set task_args.data_dir to a directory holding them"
            )
        return paths

    def _split(self, split: str, paths: tuple[Path, Path], max_n: int) -> ArrayDataset:
        """Read, subsample and resize one split."""
        import torch

        images, labels = read_idx(paths[0]), read_idx(paths[1])  # (N, 28, 28), (N,)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{paths[0]}: {len(images)} images but {len(labels)} labels")
        idx = subset_indices(len(labels), max_n, "fashion-mnist", split, max_n)
        pixels = torch.from_numpy(np.ascontiguousarray(images[idx])).unsqueeze(1)  # (n, 1, 28, 28)
        pixels = resize_images(pixels, self.image_size)  # (n, 1, S, S) uint8
        return ArrayDataset({"pixels": pixels}, torch.from_numpy(labels[idx].astype(np.int64)))

    def load(self) -> TaskData:
        """Read both splits.

        Returns:
            ``pixels`` ``(N, 1, S, S)`` ``uint8``, labels ``(N,)`` int64 in ``0..9``, class names.

        Raises:
            AssetMissingError: if the IDX files are not installed.

        """
        paths = self._paths()
        train = self._split("train", paths["train"], self.max_train)
        test = self._split("test", paths["test"], self.max_test)
        return TaskData(train, test, CLASS_NAMES)

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return MobileNetV2 features with a fresh head (:func:`mobilenet_model`)."""
        return mobilenet_model(self.pretrained, num_classes, seed)
