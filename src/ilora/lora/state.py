"""The only bridge between modules and ``TensorDict``s.

``factor_state`` reads what a client trained (factors, routers and head); ``load_setup``
installs a ``LocalSetup`` (factors, optional expert banks, residuals, head values) and returns
the trainable parameters by key;
``base_weights`` exposes the frozen weights read-only (QR/SVD inits). Every ``TensorDict``
this bridge returns is on the CPU and every one it installs goes to the model's device
(``train.device``), so nothing outside the model depends on where it computes.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ilora.lora import keys
from ilora.lora.layer import LoRALinear
from ilora.types import LocalSetup
from ilora.types import TensorDict


def adapted(model: nn.Module) -> dict[str, LoRALinear]:
    """Return the ``LoRALinear`` modules of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Return the head parameter names recorded by ``inject``."""
    names: tuple[str, ...] = getattr(model, "ilora_head", ())
    return names


def base_weights(model: nn.Module) -> TensorDict:
    """Return ``{"<module>.base": W (d_out, d_in)}`` of the frozen weights (do not modify).

    On the CPU these are views; a model on another device gives CPU copies.
    """
    return {keys.make(n, "base"): m.base_weight().detach().cpu() for n, m in adapted(model).items()}


def template(model: nn.Module) -> TensorDict:
    """Return what ``Algorithm.server_init`` starts from: base weights and the initial head."""
    params = dict(model.named_parameters())
    head = {n: _cpu_copy(params[n]) for n in head_names(model)}
    return {**base_weights(model), **head}


def factor_state(model: nn.Module) -> TensorDict:
    """Return the installed factors (and routers) and the head values (detached copies).

    A frozen expert bank is not returned: it is an input of the round, like a residual.
    """
    out: TensorDict = {}
    for name, mod in adapted(model).items():
        for kind in keys.PARAM_KINDS:
            p = getattr(mod, kind)
            if p is not None:
                out[keys.make(name, kind)] = _cpu_copy(p)
    params = dict(model.named_parameters())
    out.update({n: _cpu_copy(params[n]) for n in head_names(model)})
    return out


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


def _on_model_device(model: nn.Module, setup: LocalSetup) -> LocalSetup:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "cpu":
        return setup
    factors = {k: v.to(device) for k, v in setup.factors.items()}
    return replace(
        setup, factors=factors, residual={k: v.to(device) for k, v in setup.residual.items()}
    )


def load_setup(model: nn.Module, setup: LocalSetup) -> dict[str, nn.Parameter]:
    """Install ``setup`` into ``model`` and return its trainable parameters by key.

    Layers without factors in ``setup`` get no adapter; layers without a residual get none.

    Raises:
        ValueError: on a key that names no layer or head parameter, or a shape that does not fit.

    """
    layers, params = adapted(model), dict(model.named_parameters())
    heads, setup = set(head_names(model)), _on_model_device(model, setup)
    for key in list(setup.factors) + list(setup.residual):
        parsed = keys.parse(key)
        if (parsed is None and key not in heads) or (
            parsed is not None and parsed[0] not in layers
        ):
            raise ValueError(
                f"setup key {key!r} names no adapted layer or head parameter of the model"
            )
    for name, mod in layers.items():
        f = setup.factors
        mod.set_adapter(f.get(f"{name}.lora_A"), f.get(f"{name}.lora_B"), f.get(f"{name}.lora_C"))
        mod.set_experts(*(f.get(keys.make(name, kind)) for kind in keys.EXPERT_KINDS))
        mod.set_nested(*(f.get(keys.make(name, kind)) for kind in keys.NESTED_KINDS))
        mod.set_residual(setup.residual.get(keys.make(name, "residual")))
    for n in heads:
        if n in setup.factors:
            value = setup.factors[n]
            if value.shape != params[n].shape:
                raise ValueError(
                    f"head {n!r} must be {tuple(params[n].shape)}, got {tuple(value.shape)}"
                )
            params[n].data.copy_(value)
    live = {
        **{k: p for n, m in layers.items() for k, p in _factor_params(n, m).items()},
        **{n: params[n] for n in heads},
    }
    trainable = set(setup.factors) if setup.trainable is None else set(setup.trainable)
    for k, p in live.items():
        p.requires_grad_(k in trainable)
    return {k: p for k, p in sorted(live.items()) if k in trainable}


def _factor_params(name: str, mod: LoRALinear) -> dict[str, nn.Parameter]:
    return {keys.make(name, k): p for k in keys.PARAM_KINDS if (p := getattr(mod, k)) is not None}
