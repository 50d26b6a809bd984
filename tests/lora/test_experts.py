"""The routed expert bank of ``LoRALinear`` against a reference forward written here in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ilora.lora.layer import LoRALinear
from ilora.lora.spec import LoRASpec
from reference_math import top_m_gate

D_IN, D_OUT, R, M, OWN = 5, 4, 2, 3, 1
# router outputs 0..4 -> experts 0, 1, 2, 1, 1 (outputs >= M map to the own expert 1); the layer
# holds the other experts [0, 2] as its bank (slots 0, 1) and the own expert as its pair (slot 2)
SLOT_MAP = torch.tensor([0, 2, 1, 2, 2])
EXPERT_OF_OUTPUT = [0, 1, 2, 1, 1]


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _experts(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return _rand(g, M, R, D_IN), _rand(g, M, D_OUT, R), 3.0 * _rand(g, 2 * M - 1, D_IN)


def _routed_layer(seed: int = 0) -> LoRALinear:
    EA, EB, G = _experts(seed)
    layer = LoRALinear(nn.Linear(D_IN, D_OUT), LoRASpec(alpha=6.0))
    layer.set_adapter(EA[OWN], EB[OWN])
    layer.set_experts(EA[[0, 2]], EB[[0, 2]], G, SLOT_MAP)
    return layer


def _reference(layer: LoRALinear, x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[set]]:
    """y = base(x) + s Σ_kept w_j B_e(j) A_e(j) x, top-M of softmax(G x) renormalised."""
    EA, EB, G = (t.double().numpy() for t in _experts(seed))
    W = layer.base.weight.detach().double().numpy()
    b = layer.base.bias.detach().double().numpy()
    s = 6.0 / R
    ys, chosen = [], []
    for t in x:
        kept, w = top_m_gate(G @ t, M)
        y = W @ t + b
        for j, wj in zip(kept, w, strict=True):
            e = EXPERT_OF_OUTPUT[j]
            y = y + s * wj * (EB[e] @ (EA[e] @ t))
        ys.append(y)
        chosen.append({EXPERT_OF_OUTPUT[j] for j in kept})
    return np.stack(ys), chosen


def test_routed_forward_matches_the_reference() -> None:
    layer = _routed_layer()
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(5))
    ref, chosen = _reference(layer, x.double().numpy())
    assert np.allclose(layer(x).detach().double().numpy(), ref, atol=1e-5)
    assert all(OWN in c for c in chosen)  # the own expert is always selected
    assert {len(c) for c in chosen} >= {1, 3}  # adaptive: some tokens use 1 expert, some all 3


def test_gates_are_renormalised_and_always_include_the_own_expert() -> None:
    layer = _routed_layer(1)
    x = torch.randn(200, D_IN, generator=torch.Generator().manual_seed(6))
    gates = layer.expert_gates(x)  # (200, M): bank slots, then the pair
    assert gates.shape == (200, M)
    assert torch.allclose(gates.sum(-1), torch.ones(200), atol=1e-6)
    assert bool((gates[:, -1] > 0).all())


def test_only_the_pair_and_the_router_are_parameters() -> None:
    layer = _routed_layer()
    bank = (layer.experts_A.clone(), layer.experts_B.clone())  # type: ignore[union-attr]
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B", "router"}
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.5)
    x = torch.randn(16, D_IN, generator=torch.Generator().manual_seed(2))
    layer(x).square().sum().backward()  # type: ignore[no-untyped-call]
    assert layer.router.grad is not None and layer.router.grad.abs().sum() > 0  # type: ignore[union-attr]
    opt.step()
    assert torch.equal(layer.experts_A, bank[0]) and torch.equal(layer.experts_B, bank[1])


def test_one_expert_is_the_plain_adapter() -> None:
    g = torch.Generator().manual_seed(3)
    A, B = _rand(g, R, D_IN), _rand(g, D_OUT, R)
    plain = LoRALinear(nn.Linear(D_IN, D_OUT), LoRASpec(alpha=6.0))
    plain.set_adapter(A, B)
    routed = LoRALinear(plain.base, LoRASpec(alpha=6.0))
    routed.set_adapter(A, B)
    routed.set_experts(
        torch.zeros(0, R, D_IN), torch.zeros(0, D_OUT, R), _rand(g, 1, D_IN), torch.tensor([0])
    )
    x = _rand(g, 7, D_IN)
    assert torch.allclose(routed(x), plain(x), atol=1e-6)


def test_set_adapter_removes_the_bank_and_without_it_the_layer_is_unchanged() -> None:
    layer = _routed_layer()
    g = torch.Generator().manual_seed(4)
    A, B = _rand(g, R, D_IN), _rand(g, D_OUT, R)
    layer.set_adapter(A, B)
    assert layer.router is None and layer.experts_A is None
    x = _rand(g, 3, D_IN)
    expected = layer.base(x) + (6.0 / R) * x @ (B @ A).T
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_conv1x1_routes_per_pixel_like_linear() -> None:
    conv = nn.Conv2d(D_IN, D_OUT, kernel_size=1)
    EA, EB, G = _experts()
    layer = LoRALinear(conv, LoRASpec(alpha=6.0))
    layer.set_adapter(EA[OWN], EB[OWN])
    layer.set_experts(EA[[0, 2]], EB[[0, 2]], G, SLOT_MAP)
    lin = _routed_layer()
    with torch.no_grad():
        lin.base.weight.copy_(conv.weight.view(D_OUT, D_IN))
        lin.base.bias.copy_(conv.bias)
    x = torch.randn(2, D_IN, 3, 3, generator=torch.Generator().manual_seed(8))
    flat = x.permute(0, 2, 3, 1)  # (N, H, W, C)
    assert torch.allclose(layer(x), lin(flat).permute(0, 3, 1, 2), atol=1e-5)


def test_bad_banks_are_refused_and_a_bank_has_no_dense_delta() -> None:
    EA, EB, G = _experts()
    layer = LoRALinear(nn.Linear(D_IN, D_OUT), LoRASpec())
    with pytest.raises(ValueError, match="an expert bank needs the pair"):
        layer.set_experts(EA[[0, 2]], EB[[0, 2]], G, SLOT_MAP)
    layer.set_adapter(EA[OWN], EB[OWN])
    with pytest.raises(ValueError, match="go together"):
        layer.set_experts(EA[[0, 2]], None, G, SLOT_MAP)
    with pytest.raises(ValueError, match="do not fit"):
        layer.set_experts(EA[[0, 2], :1], EB[[0, 2]], G, SLOT_MAP)
    with pytest.raises(ValueError, match="router"):
        layer.set_experts(EA[[0, 2]], EB[[0, 2]], G[:2], SLOT_MAP[:2])
    with pytest.raises(ValueError, match="expert_map"):
        layer.set_experts(EA[[0, 2]], EB[[0, 2]], G, torch.tensor([0, 3, 1, 2, 2]))
    layer.set_experts(EA[[0, 2]], EB[[0, 2]], G, SLOT_MAP)
    with pytest.raises(ValueError, match="dense delta"):
        layer.merge()
