from __future__ import annotations

import pytest
import torch

from conftest import TinyMLP
from ilora.lora.inject import inject
from ilora.lora.layer import LoRALinear
from ilora.lora.spec import LoRASpec
from ilora.lora.state import base_weights
from ilora.lora.state import factor_state
from ilora.lora.state import load_setup
from ilora.lora.state import template
from ilora.types import LocalSetup


def test_only_targets_are_wrapped_and_only_the_head_stays_trainable() -> None:
    m = TinyMLP()
    names = inject(m, LoRASpec(), [r"^fc1$"], head=[r"^classifier\."])
    assert names == ["fc1"] and isinstance(m.fc1, LoRALinear) and not isinstance(m.fc2, LoRALinear)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}


def test_no_match_names_the_modules() -> None:
    with pytest.raises(ValueError, match="no module matches"):
        inject(TinyMLP(), LoRASpec(), [r"query"])


def test_factor_state_and_load_setup_round_trip() -> None:
    m = TinyMLP()
    inject(m, LoRASpec(), [r"^fc\d$"], head=[r"^classifier\."])
    g = torch.Generator().manual_seed(0)
    factors = {
        "fc1.lora_A": torch.randn(2, 6, generator=g),
        "fc1.lora_B": torch.randn(8, 2, generator=g),
        "classifier.weight": torch.randn(3, 8, generator=g),
        "classifier.bias": torch.randn(3, generator=g),
    }
    params = load_setup(
        m, LocalSetup(factors, trainable=frozenset({"fc1.lora_B", "classifier.weight"}))
    )
    assert set(params) == {"fc1.lora_B", "classifier.weight"}
    state = factor_state(m)
    assert set(state) == set(factors) and all(torch.equal(state[k], v) for k, v in factors.items())
    assert not m.fc1.lora_A.requires_grad and m.fc2.lora_A is None


def test_template_holds_base_views_and_head() -> None:
    m = TinyMLP()
    inject(m, LoRASpec(), [r"^fc\d$"], head=[r"^classifier\."])
    t = template(m)
    assert set(t) == {"fc1.base", "fc2.base", "classifier.weight", "classifier.bias"}
    assert base_weights(m)["fc1.base"].data_ptr() == m.fc1.base.weight.data_ptr()


def test_unknown_setup_key_is_refused() -> None:
    m = TinyMLP()
    inject(m, LoRASpec(), [r"^fc\d$"], head=[r"^classifier\."])
    with pytest.raises(ValueError, match="names no adapted layer"):
        load_setup(m, LocalSetup({"fc9.lora_A": torch.zeros(1, 6)}))
