from __future__ import annotations

import pytest
import torch
from torch import nn

from ilora.lora.layer import LoRALinear
from ilora.lora.spec import LoRASpec

G = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def test_zero_b_equals_the_base() -> None:
    base = nn.Linear(5, 4)
    layer = LoRALinear(base, LoRASpec(alpha=8.0))
    x = _rand(3, 5)
    layer.set_adapter(_rand(2, 5), torch.zeros(4, 2))
    assert torch.equal(layer(x), base(x))


def test_forward_is_base_plus_scaled_product_and_residual() -> None:
    base = nn.Linear(5, 4)
    spec = LoRASpec(alpha=8.0)
    layer = LoRALinear(base, spec)
    A, B, C, R = _rand(3, 5), _rand(4, 3), _rand(3, 3), _rand(4, 5)
    layer.set_adapter(A, B, C)
    layer.set_residual(R)
    x = _rand(2, 5)
    expected = base(x) + x @ R.T + (8.0 / 3) * x @ (B @ C @ A).T
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_rank_mask_zeroes_components() -> None:
    layer = LoRALinear(nn.Linear(5, 4), LoRASpec())
    A, B = _rand(3, 5), _rand(4, 3)
    layer.set_adapter(A, B, mask=torch.tensor([1.0, 0.0, 1.0]))
    x = _rand(2, 5)
    keep = [0, 2]
    expected = layer.base(x) + layer.scaling * x @ (B[:, keep] @ A[keep]).T
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_rslora_and_rank_scaled_alpha() -> None:
    assert LoRASpec(alpha=8.0, rslora=True).scale(4) == pytest.approx(4.0)
    assert LoRASpec(alpha=16.0, rank=8, alpha_scales_with_rank=True).scale(2) == pytest.approx(2.0)


def test_merge_equals_forward_and_unmerge_restores() -> None:
    base = nn.Linear(5, 4)
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, LoRASpec(alpha=4.0))
    layer.set_adapter(_rand(2, 5), _rand(4, 2))
    layer.set_residual(_rand(4, 5))
    x = _rand(3, 5)
    before = layer(x)
    layer.merge()
    assert torch.allclose(layer(x), before, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-6)


def test_conv1x1_matches_the_linear_formula() -> None:
    conv = nn.Conv2d(5, 4, kernel_size=1)
    layer = LoRALinear(conv, LoRASpec(alpha=4.0))
    A, B = _rand(2, 5), _rand(4, 2)
    layer.set_adapter(A, B)
    x = _rand(2, 5, 3, 3)
    flat = x.permute(0, 2, 3, 1)  # (N, H, W, C)
    expected = conv(x) + (2.0 * flat @ (B @ A).T).permute(0, 3, 1, 2)
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_bad_shapes_and_ranks_are_refused() -> None:
    layer = LoRALinear(nn.Linear(5, 4), LoRASpec())
    with pytest.raises(ValueError, match="do not fit"):
        layer.set_adapter(_rand(2, 6), _rand(4, 2))
    with pytest.raises(ValueError, match="exceeds min"):
        layer.set_adapter(_rand(5, 5), _rand(4, 5))
    with pytest.raises(ValueError, match="cannot adapt"):
        LoRALinear(nn.Conv2d(3, 3, 3), LoRASpec())


def test_dropout_applies_to_the_lora_input_only() -> None:
    base = nn.Linear(5, 4)
    layer = LoRALinear(base, LoRASpec(dropout=0.5))
    layer.set_adapter(_rand(2, 5), torch.zeros(4, 2))
    layer.train()
    x = _rand(3, 5)
    assert torch.equal(layer(x), base(x))  # B = 0: dropout cannot touch the base path
