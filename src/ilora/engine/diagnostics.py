"""Dense diagnostics of a round: ``agg_error`` and ``download_error``, one meaning for every method.

Every quantity here is a *dense effective change* per adapted layer, ``D (d_out, d_in)``: what a
loaded setup adds to the frozen base, ``residual + s·B C A`` (nested factors applied, the rank
mask included, ``LoRALinear.delta_weight``). A layer with a routed expert bank (FedLEASE) has no
input-independent change; its dense reading is the router-free uniform mixture of the installed
experts, ``residual + (s(r) B A + Σ_e s(r_b) B_e A_e) / (K + 1)``, the same reading FedLEASE's
``export`` gives its global model. Heads are not compared (every method FedAvgs them exactly or
keeps them local), so they cannot dilute an error in the adapters.

- ``agg_error`` (server, after ``aggregate``): ``‖G⁺ − G − Σ_k p_k ΔW_k‖_F / ‖Σ_k p_k ΔW_k‖_F``
  over all layers together, where ``G``/``G⁺`` are the dense changes of the exported global model
  before/after the round (factors·scale, residual: everything it starts the next round from),
  ``ΔW_k`` is client k's dense change from its start to the end of its local training (measured
  by the client, :func:`change_since`) and ``p_k`` its normalised upload weight. 0 when the
  ideal is 0 and nothing was applied.
- ``download_error`` (with the personal evaluation): the mean over clients of
  ``‖W_k − W_g‖_F / ‖W_g‖_F`` with ``W = W0 + D`` the effective weights of every adapted layer,
  ``W_g`` the exported global model and ``W_k`` what client k starts its next round from
  (``client_init`` of its download, at its rank, with its state): what rank truncation (or, for
  a personalized method, personalization) puts between a client and the global model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ilora.lora import keys
from ilora.lora.layer import LoRALinear
from ilora.lora.state import adapted
from ilora.types import TensorDict


def layer_change(mod: LoRALinear) -> torch.Tensor:
    """Return the dense change ``(d_out, d_in)`` a layer applies (see the module docstring)."""
    if mod.router is None:
        return mod.delta_weight()
    assert mod.lora_A is not None and mod.lora_B is not None
    assert mod.experts_A is not None and mod.experts_B is not None
    mix = mod.scaling * (mod.lora_B @ mod.lora_A)  # (d_out, r) @ (r, d_in)
    if mod.experts_A.shape[0] > 0:
        bank = torch.einsum("kor,kri->oi", mod.experts_B, mod.experts_A)  # -> (d_out, d_in)
        mix = mix + mod.spec.scale(int(mod.experts_A.shape[1])) * bank
    out = mix / mod.num_experts
    if mod.residual is not None:
        out = out + mod.residual
    return out.detach()


@torch.no_grad()
def dense_changes(model: nn.Module) -> TensorDict:
    """Return ``{"<module>.residual": D}``: the dense change of every adapted layer of ``model``."""
    return {keys.make(n, "residual"): layer_change(m) for n, m in adapted(model).items()}


def change_since(model: nn.Module, start: Mapping[str, torch.Tensor]) -> TensorDict:
    """Return the model's dense changes minus ``start`` (a client's ``ΔW_k`` of one round)."""
    now = dense_changes(model)
    return {k: now[k] - start[k] for k in sorted(start)}


def agg_error(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    changes: Mapping[int, Mapping[str, torch.Tensor]],
    weights: Mapping[int, float],
) -> float:
    """Return ``agg_error`` (module docstring) in float64; ``weights`` need not be normalised."""
    total = sum(weights.values())
    num = den = 0.0
    for key in sorted(before):
        ideal = sum(
            (weights[c] / total) * changes[c][key].double() for c in sorted(changes)
        )  # Σ_k p_k ΔW_k
        applied = after[key].double() - before[key].double()
        num += float((applied - ideal).square().sum())
        den += float(torch.as_tensor(ideal).square().sum())
    if den == 0.0:
        return 0.0 if num == 0.0 else 1.0
    return math.sqrt(num / den)


def download_error(
    base: Mapping[str, torch.Tensor],
    global_changes: Mapping[str, torch.Tensor],
    client_changes: Mapping[int, Mapping[str, torch.Tensor]],
) -> float:
    """Return ``download_error`` (module docstring); ``base`` maps ``<module>.base`` to ``W0``."""
    dists = []
    for cid in sorted(client_changes):
        num = den = 0.0
        for key, g in sorted(global_changes.items()):
            w0 = base[key.rpartition(".")[0] + ".base"].double()
            num += float((client_changes[cid][key].double() - g.double()).square().sum())
            den += float((w0 + g.double()).square().sum())
        dists.append(math.sqrt(num / den) if den > 0 else 0.0)
    return sum(dists) / len(dists) if dists else float("nan")


def valid_changes(
    changes: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> bool:
    """Return True if a client's reported changes have exactly the reference's keys and shapes.

    A client's diagnostic is untrusted: one that does not fit (or is not finite) is left out
    and the round's metric is not computed, instead of raising.
    """
    if sorted(changes) != sorted(reference):
        return False
    return all(
        changes[k].shape == reference[k].shape
        and changes[k].is_floating_point()
        and bool(torch.isfinite(changes[k]).all())
        for k in reference
    )
