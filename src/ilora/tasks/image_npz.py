"""Bring your own images: an ``.npz`` file with train and test arrays, on MobileNetV2.

The file holds ``x_train, y_train, x_test, y_test``. Images are ``(N, H, W)``, ``(N, H, W, C)`` or
``(N, C, H, W)`` with ``C`` 1 or 3 (a 4-d array whose last axis is 1 or 3 is read as channels-last),
``uint8`` in ``0..255`` or float in ``[0, 1]``; labels are ``(N,)`` integers ``0..K-1``. Images
are resized once to ``image_size`` and stored as ``(N, C, S, S)`` in their own dtype (``uint8``
stays ``uint8``, floats become float32); ``ImageClassifier.forward`` normalises them.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import ClassVar

import numpy as np

from ilora.config.fields import option
from ilora.tasks.base import ArrayDataset
from ilora.tasks.base import DataPeek
from ilora.tasks.base import TaskData
from ilora.tasks.fashion_mnist import MOBILENET_V2_LORA_TARGETS
from ilora.tasks.fashion_mnist import mobilenet_model
from ilora.tasks.fashion_mnist import resize_images
from ilora.tasks.options import bounded
from ilora.tasks.options import check_bool
from ilora.tasks.options import check_bounds
from ilora.tasks.options import option_error

if TYPE_CHECKING:
    import torch
    from torch import nn

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
LAYOUT = (
    "expected arrays x_train, y_train, x_test, y_test; images (N,H,W), (N,H,W,C) or (N,C,H,W) "
    "with C in {1, 3}, uint8 0..255 or float in [0, 1]; labels (N,) integers 0..K-1"
)


def _images_nchw(name: str, x: np.ndarray) -> torch.Tensor:
    """Return images as ``(N, C, H, W)``: uint8 kept, floats (checked in ``[0, 1]``) float32.

    Args:
        name: the array and its file for messages, e.g. ``'x_train' in data.npz``.
        x: the images.

    Raises:
        ValueError: naming the array if its shape, channels, dtype, values or range is wrong.

    """
    import torch

    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise ValueError(f"image-npz: array {name} has shape {x.shape}; {LAYOUT}")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"image-npz: array {name} has dtype {x.dtype}; {LAYOUT}")
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(
            f"image-npz: array {name} has {bad} NaN or infinite values; replace them "
            "(e.g. np.nan_to_num) or drop those images and save the file again"
        )
    if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(
            f"image-npz: float array {name} has values in [{x.min()}, {x.max()}]; "
            "scale floats to [0, 1] or pass uint8 0..255"
        )
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _not_npz(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"image-npz: {path} is not an .npz archive ({reason}); write it with "
        "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
    )


def _labels(name: str, y: np.ndarray, n: int) -> torch.Tensor:
    """Return labels as ``(N,)`` int64.

    Raises:
        ValueError: naming the array if it is not ``n`` non-negative integers.

    """
    import torch

    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"image-npz: array {name} has shape {y.shape} and dtype {y.dtype}, expected "
            f"({n},) integers to match the images; {LAYOUT}"
        )
    if n and y.min() < 0:
        raise ValueError(f"image-npz: array {name} has negative labels; {LAYOUT}")
    return torch.from_numpy(y.astype(np.int64))


@dataclass(frozen=True)
class ImageNpz:
    """Your own labelled images from an ``.npz`` file, classified with MobileNetV2 + LoRA."""

    name: ClassVar[str] = "image-npz"
    lora_targets: ClassVar[tuple[str, ...]] = MOBILENET_V2_LORA_TARGETS
    head: ClassVar[tuple[str, ...]] = (r"^classifier\.",)

    path: str = field(metadata={"help": "an .npz with x_train, y_train, x_test, y_test"})
    image_size: int = bounded(32, "side in pixels the images are resized to", 16, 256)
    pretrained: bool = option(True, "start from ImageNet weights (false: seeded random init)")
    class_names: tuple[str, ...] = option((), "names of classes 0..K-1 (default: '0', '1', ...)")

    def __post_init__(self) -> None:
        if not isinstance(self.path, str | Path) or not str(self.path):
            raise option_error(self, "path", "not a file path", "the path of an .npz file")
        check_bounds(self)
        check_bool(self, "pretrained")
        names = self.class_names
        if not isinstance(names, list | tuple) or not all(isinstance(c, str) for c in names):
            raise option_error(self, "class_names", "not a list of strings", "a list of names")
        object.__setattr__(self, "class_names", tuple(names))  # a YAML list becomes a tuple

    def _read(self) -> dict[str, np.ndarray]:
        """Return the four arrays of the file.

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: if an array is missing.

        """
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(f"image-npz: no file at path={str(path)!r}; {LAYOUT}")
        with path.open("rb") as stream:
            head = stream.read(4)
        if not head.startswith(b"PK"):  # an .npz is a zip archive
            raise _not_npz(path, f"it starts with {head!r}, not a zip archive's b'PK'")
        try:
            npz = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise _not_npz(path, str(err)) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise _not_npz(path, "it holds a single .npy array")
        with npz:
            missing = [a for a in ARRAYS if a not in npz.files]
            if missing:
                raise ValueError(
                    f"image-npz: {path} has no array {', '.join(map(repr, missing))} "
                    f"(it has {', '.join(npz.files) or 'none'}); {LAYOUT}"
                )
            return {a: npz[a] for a in ARRAYS}

    def _checked(self, arrays: dict[str, np.ndarray], split: str) -> tuple[torch.Tensor, ...]:
        """Return one split's ``(N, C, H, W)`` images and ``(N,)`` labels, checked."""
        pixels = _images_nchw(f"'x_{split}' in {self.path}", arrays[f"x_{split}"])
        labels = _labels(f"'y_{split}' in {self.path}", arrays[f"y_{split}"], pixels.shape[0])
        return pixels, labels

    def _split(self, arrays: dict[str, np.ndarray], split: str) -> ArrayDataset:
        """Convert and resize one split."""
        pixels, labels = self._checked(arrays, split)
        return ArrayDataset({"pixels": resize_images(pixels, self.image_size)}, labels)

    def peek(self) -> DataPeek:
        """Check the file's arrays and return the training labels (nothing resized).

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: naming the file, the array and the fix.

        """
        arrays = self._read()
        top = -1
        for split in ("train", "test"):
            labels = self._checked(arrays, split)[1]
            top = max(top, int(labels.max()) if len(labels) else -1)
        y_train = arrays["y_train"].astype(np.int64)
        return DataPeek(y_train, None, self._names(top + 1), self.path)

    def _names(self, num_classes: int) -> tuple[str, ...]:
        """Return the class names, checking that they cover every label."""
        if not self.class_names:
            return tuple(str(i) for i in range(num_classes))
        if len(self.class_names) < num_classes:
            raise ValueError(
                f"image-npz: class_names has {len(self.class_names)} names but the labels go "
                f"up to {num_classes - 1}"
            )
        return self.class_names

    def load(self) -> TaskData:
        """Read the file.

        Returns:
            ``pixels`` ``(N, C, S, S)`` (``uint8`` or float32), int64 labels and class names.

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: naming the array and the expected layout if an array is missing or wrong.

        """
        arrays = self._read()
        train, test = self._split(arrays, "train"), self._split(arrays, "test")
        top = max((int(d.labels.max()) for d in (train, test) if len(d)), default=0)
        return TaskData(train, test, self._names(top + 1))

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return MobileNetV2 features with a fresh head (:func:`mobilenet_model`)."""
        return mobilenet_model(self.pretrained, num_classes, seed)
