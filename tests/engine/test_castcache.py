"""The bf16 cast cache of frozen layers: bitwise plain autocast, remade when a weight changes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ilora.engine import castcache
from ilora.engine.compute import model_autocast
from ilora.engine.compute import place
from ilora.lora.inject import inject
from ilora.lora.layer import LoRALinear
from ilora.lora.spec import LoRASpec
from ilora.lora.state import adapted


def _net() -> nn.Sequential:
    """Frozen convs (3x3, depthwise, 1x1 with LoRA), batch norm, dropout, linears, a head."""
    torch.manual_seed(0)
    spec = LoRASpec(alpha=4.0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.Identity(),
        LoRALinear(nn.Conv2d(8, 16, 1), spec), nn.Flatten(), nn.Linear(16 * 8 * 8, 32),
        nn.Dropout(0.1), LoRALinear(nn.Linear(32, 24), spec), nn.GELU(), nn.Linear(24, 5),
    )  # fmt: skip
    for p in net.parameters():
        p.requires_grad_(False)
    net[-1].requires_grad_(True)  # the head trains: autocast caches it itself
    for i, (d_out, d_in) in ((5, (16, 8)), (9, (24, 32))):
        g = torch.Generator().manual_seed(d_in)
        factors = torch.randn(2, d_in, generator=g), torch.randn(d_out, 2, generator=g)
        _lora(net, i).set_adapter(*factors)
    return net


def _lora(net: nn.Sequential, i: int) -> LoRALinear:
    layer = net[i]
    assert isinstance(layer, LoRALinear)
    return layer


def _plain(module: nn.Module) -> nn.Linear | nn.Conv2d:
    assert isinstance(module, nn.Linear | nn.Conv2d)
    return module


def _loss_and_grads(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    torch.manual_seed(1)  # the same dropout masks
    with model_autocast(net):
        logits = net(x)
    loss = logits.float().square().mean()
    params = [p for p in net.parameters() if p.requires_grad]
    return [loss.detach(), *torch.autograd.grad(loss, params)]


def test_cached_casts_are_bitwise_plain_autocast() -> None:
    plain, cached = _net(), _net()
    place(plain, "cpu", "bf16", cast_cache=False)
    place(cached, "cpu", "bf16")
    assert not any(isinstance(m, castcache.CachedCastLinear) for m in plain.modules())
    assert isinstance(cached[7], castcache.CachedCastLinear)
    assert isinstance(cached[3], castcache.CachedCastConv2d)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for _ in range(2):  # the second pass runs on the cached copies
        want, got = _loss_and_grads(plain, x), _loss_and_grads(cached, x)
        assert len(got) == 7 and all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    plain.eval()
    cached.eval()  # evaluation: inference mode, batch norm's running statistics
    with torch.inference_mode(), model_autocast(cached):
        got_eval = cached(x)
    with torch.inference_mode(), model_autocast(plain):
        assert torch.equal(got_eval, plain(x))


def test_a_copy_is_made_once_and_again_after_a_change() -> None:
    net = _net()
    place(net, "cpu", "bf16")
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode(), model_autocast(net):  # made in inference mode...
        net(x)
    linear, adapted = _plain(net[7]), _lora(net, 9)
    with model_autocast(net):
        w1 = castcache.cast_operands(linear)
        w2 = castcache.cast_operands(linear)
    assert w1 is not None and w2 is not None and w1[0] is w2[0]
    assert w1[0].dtype == torch.bfloat16 and not torch.is_inference(w1[0])
    adapted.merge()  # adds the adapter into the base weight in place
    base = _plain(adapted.base)
    with model_autocast(net):
        w3 = castcache.cast_operands(base)
    assert w3 is not None and torch.equal(w3[0], base.weight.to(torch.bfloat16))
    with model_autocast(net):  # ...and used by a training step afterwards
        net(x).float().sum().backward()
    assert castcache.cast_operands(linear) is None  # no autocast: the plain layer
    with model_autocast(net):
        assert castcache.cast_operands(_plain(net[-1])) is None  # a trainable head: autocast's


def test_fp32_restores_the_plain_layers() -> None:
    net, reference = _net().eval(), _net().eval()
    place(net, "cpu", "bf16")
    x = torch.randn(2, 3, 16, 16)
    with model_autocast(net):
        net(x)
    place(net, "cpu", "fp32")
    assert type(net[7]) is nn.Linear and type(net[0]) is nn.Conv2d
    assert "_ilora_cast" not in net[7].__dict__
    assert torch.equal(net(x), reference(x))
    assert copy.deepcopy(net).state_dict().keys() == reference.state_dict().keys()


def _adapted(model: nn.Module, targets: tuple[str, ...], head: tuple[str, ...]) -> nn.Module:
    """``model`` with rank-2 adapters (random, non-zero B) on ``targets``, the head trainable."""
    inject(model, LoRASpec(alpha=4.0), targets, head=head)
    g = torch.Generator().manual_seed(3)
    for layer in adapted(model).values():
        layer.set_adapter(
            torch.randn(2, layer.d_in, generator=g), torch.randn(layer.d_out, 2, generator=g)
        )
    return model.train()


@pytest.mark.parametrize("task", ["fashion-mnist", "tiny-text"])
def test_packaged_models_train_bitwise_as_under_plain_autocast(task: str) -> None:
    """MobileNetV2 (channels-last convolutions) and the BERT of the smoke preset (dropout)."""
    if task == "fashion-mnist":
        from ilora.models.mobilenet_v2 import ImageClassifier
        from ilora.models.mobilenet_v2 import mobilenet_v2_features
        from ilora.tasks.fashion_mnist import FashionMNIST as Task

        def make() -> nn.Module:
            return ImageClassifier(mobilenet_v2_features(pretrained=False), 10, seed=0)

        inputs = {"pixels": torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)}
    else:
        from ilora.models.encoder import tiny_bert
        from ilora.tasks.tiny_text import TinyText as Task  # type: ignore[assignment]

        def make() -> nn.Module:
            return tiny_bert(0)

        ids = torch.randint(1, 100, (4, 12), generator=torch.Generator().manual_seed(4))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    models = [_adapted(make(), Task.lora_targets, Task.head) for _ in range(2)]
    place(models[0], "cpu", "bf16", cast_cache=False)
    place(models[1], "cpu", "bf16")
    results = []
    for model in models:
        torch.manual_seed(1)
        with model_autocast(model):
            loss = model(**inputs).float().logsumexp(dim=1).mean()
        params = [p for p in model.parameters() if p.requires_grad]
        results.append([loss.detach(), *torch.autograd.grad(loss, params)])
    assert len(results[1]) > 3
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
