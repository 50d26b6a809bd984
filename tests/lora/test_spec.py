from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from ilora.lora.layer import LoRALinear
from ilora.lora.spec import LoRASpec


def test_rank_policies() -> None:
    assert LoRASpec(rank=4).client_ranks(3, 0) == [4, 4, 4]
    assert LoRASpec(rank_policy="cycle", ranks=(2, 4, 8, 16)).client_ranks(6, 0) == [
        2,
        4,
        8,
        16,
        2,
        4,
    ]
    assert LoRASpec(rank_policy="explicit", ranks=(1, 2)).client_ranks(2, 0) == [1, 2]
    with pytest.raises(ValueError, match="one rank per client"):
        LoRASpec(rank_policy="explicit", ranks=(1, 2)).client_ranks(3, 0)


def test_tier_policy_is_seeded_and_follows_the_fractions() -> None:
    spec = LoRASpec(rank_policy="tiers", ranks=(2, 16), tier_fractions=(0.8, 0.2))
    ranks = spec.client_ranks(1000, seed=3)
    assert ranks == spec.client_ranks(1000, seed=3)
    assert 700 < Counter(ranks)[2] < 900


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 0},
        {"alpha": 0.0},
        {"dropout": 1.0},
        {"rank_policy": "cycle"},
        {"rank_policy": "tiers", "ranks": (2, 4), "tier_fractions": (0.5,)},
        {"ranks": (0,)},
    ],
)
def test_invalid_specs_name_the_field(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="lora\\."):
        LoRASpec(**kwargs)  # type: ignore[arg-type]


def test_hf_conv1d_is_adapted_like_a_linear_layer() -> None:
    conv = Conv1D(nf=4, nx=5)  # GPT-2 style: weight stored (d_in, d_out)
    layer = LoRALinear(conv, LoRASpec(alpha=2.0))
    assert (layer.d_out, layer.d_in) == (4, 5)
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(2, 5, generator=g), torch.randn(4, 2, generator=g)
    layer.set_adapter(A, B)
    x = torch.randn(3, 5, generator=g)
    assert torch.allclose(layer(x), conv(x) + x @ (B @ A).T, atol=1e-5)
