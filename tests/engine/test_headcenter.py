"""``train.center_head``: the head reads its input minus the frozen backbone's mean input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinyMLP
from conftest import TinySetup
from conftest import tiny_data
from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.config import ConfigError
from ilora.engine.headcenter import HeadCenter
from ilora.engine.headcenter import center_head
from ilora.engine.headcenter import fold_center
from ilora.engine.headcenter import fold_head
from ilora.engine.headcenter import head_center
from ilora.engine.local import backbone_features
from ilora.engine.local import head_module
from ilora.engine.setup import build
from ilora.engine.shares import Shares
from ilora.lora.spec import LoRASpec
from ilora.lora.state import load_setup
from ilora.types import LocalSetup

SETUP = TinySetup(LoRASpec(alpha=4.0), [2])
SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def _hidden(x: torch.Tensor) -> torch.Tensor:
    """The pretrained MLP's head input, computed by hand."""
    plain = TinyMLP()
    with torch.no_grad():
        return torch.relu(plain.fc2(torch.relu(plain.fc1(x))))  # (N, 8)


def test_the_head_reads_its_input_minus_the_center() -> None:
    model, x = SETUP.model(), tiny_data(10, 3).inputs["x"]
    center = torch.linspace(-1.0, 2.0, 8)
    center_head(model, center)
    plain = TinyMLP()
    with torch.no_grad():
        expected = (_hidden(x) - center) @ plain.classifier.weight.T + plain.classifier.bias
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_the_center_is_the_mean_frozen_head_input_of_the_clients_training_data() -> None:
    model, data = SETUP.model(), tiny_data(30, 4)
    parts = [np.array([0, 3, 5, 7]), np.array([10, 11, 12, 20, 29])]  # rows 1, 2, ... unused
    g = torch.Generator().manual_seed(1)
    adapter = {
        "fc1.lora_A": torch.randn(2, 6, generator=g),
        "fc1.lora_B": torch.randn(8, 2, generator=g),  # non-zero: must be removed
    }
    load_setup(model, LocalSetup(adapter))
    center = head_center(model, Shares(data, parts), 100, 0, 4)  # 100 > 9 pooled: all of them
    used = np.concatenate(parts)
    assert torch.allclose(center, _hidden(data.inputs["x"][used]).mean(0), atol=1e-6)


def test_a_subset_center_is_seeded() -> None:
    model, data = SETUP.model(), tiny_data(60, 5)
    shares = Shares(data, [np.arange(0, 30), np.arange(30, 60)])
    a, b = head_center(model, shares, 12, 0, 8), head_center(model, shares, 12, 0, 8)
    other = head_center(model, shares, 12, 1, 8)
    assert torch.equal(a, b) and not torch.equal(a, other)


def test_build_centres_the_head_only_when_asked() -> None:
    plain = build(config.load(SMOKE, []))
    assert not head_module(plain.model)._forward_pre_hooks  # the default changes nothing
    cfg = config.load(SMOKE, ["train.center_head=100000"])  # every training example
    exp = build(cfg)
    shares = exp.shares
    assert isinstance(shares, Shares)
    pooled = shares.dataset.subset(np.sort(shares.flat))
    centred = backbone_features(exp.model, pooled, 64, 0).inputs  # what the head reads
    assert centred.mean(0).abs().max() < 1e-4
    raw = backbone_features(plain.model, pooled, 64, 0).inputs
    assert raw.mean(0).abs().max() > 1e-2  # the test would not see an absent shift


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_method_builds_the_same_centred_head(name: str) -> None:
    uniform = [] if ALGORITHMS.get(name).heterogeneous_ranks else ["lora.rank_policy=uniform"]
    extra = [f"algorithm={name}", "data.local_test_fraction=0.25", *uniform]
    exp = build(config.load(SMOKE, [*extra, "train.center_head=64"]))
    x = exp.data.test.inputs
    same_data = ["data.local_test_fraction=0.25", "train.center_head=64"]
    with torch.no_grad():  # eval(): no dropout
        ref = build(config.load(SMOKE, same_data)).model.eval()(**x)
        assert torch.allclose(exp.model.eval()(**x), ref, atol=1e-5)  # centred alike
        plain = build(config.load(SMOKE, extra)).model.eval()(**x)
        assert not torch.allclose(plain, ref, atol=1e-3)


def test_a_negative_count_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.center_head"):
        config.load(SMOKE, ["train.center_head=-1"])


def test_fold_center_is_b_minus_w_c_summed_by_hand() -> None:
    g = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(3, 5, generator=g), torch.randn(3, generator=g)
    center = torch.randn(5, generator=g)
    by_hand = [
        float(bias[i]) - sum(float(weight[i, j]) * float(center[j]) for j in range(5))
        for i in range(3)
    ]
    folded = fold_center(weight, bias, center)
    assert folded.dtype == bias.dtype
    assert torch.allclose(folded, torch.tensor(by_hand), atol=1e-6, rtol=0)
    h = torch.randn(7, 5, generator=g)
    assert torch.allclose(h @ weight.T + folded, (h - center) @ weight.T + bias, atol=1e-5)


def test_the_folded_plain_head_is_the_centred_model() -> None:
    centred, plain, x = SETUP.model(), SETUP.model(), tiny_data(10, 3).inputs["x"]
    centre = center_head(centred, torch.linspace(-1.0, 2.0, 8))
    assert centre.module == "classifier"
    head = {n: p.detach() for n, p in plain.named_parameters() if n.startswith("classifier.")}
    load_setup(plain, LocalSetup(fold_head(head, centre)))  # no hook on plain
    with torch.no_grad():
        assert torch.allclose(plain(x), centred(x), atol=1e-5)
        assert not torch.allclose(SETUP.model()(x), centred(x), atol=1e-3)


def test_a_head_without_bias_is_refused_in_one_line() -> None:
    model = SETUP.model()
    model.classifier.bias = None
    with pytest.raises(ValueError, match=r"train\.center_head needs the head 'classifier'"):
        center_head(model, torch.zeros(8))
    weight_only = {"classifier.weight": torch.ones(3, 8)}
    with pytest.raises(ValueError, match="linear layer with a bias"):
        fold_head(weight_only, HeadCenter("classifier", torch.zeros(8)))
