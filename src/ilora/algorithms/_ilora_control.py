"""ILoRA-S's control variates: which tensors carry one, the client's correction, the update.

Pure functions over ``dict[str, Tensor]`` used by ``ilora.py`` (its module docstring has the
method). Controls travel under the ``cv/`` prefix, each at the shape of its tensor (LoRA factors
at the client's rank ``r_k`` on the client, at ``r_max`` on the server). ``control_scope``
chooses the tensors that carry a control (an ablation of ours): ``all`` (the released code:
LoRA ``A``, ``B`` of every adapted layer and the classifier head), ``adapters`` (the LoRA
factors only) or ``head`` (the head only: the tensors of kind ``param``). A tensor outside the
scope has no control: its gradient is not corrected and no control of it travels either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ilora.lora import keys
from ilora.lora.linalg import resize_rank
from ilora.tensors import strip_prefix
from ilora.tensors import with_prefix
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

CV = "cv/"
SCOPES = ("all", "adapters", "head")


def in_scope(key: str, scope: str) -> bool:
    """Return whether tensor ``key`` carries a control under ``scope`` (one of :data:`SCOPES`)."""
    if scope == "all":
        return True
    return (keys.kind_of(key) == "param") == (scope == "head")


def initial_control(tensors: Mapping[str, torch.Tensor], scope: str) -> TensorDict:
    """Return the server's initial control ``c = 0`` for the tensors of ``tensors`` in ``scope``."""
    import torch

    return {k: torch.zeros_like(v) for k, v in tensors.items() if in_scope(k, scope)}


def corrected(grads: TensorDict, received: TensorDict, cstate: TensorDict) -> TensorDict:
    """Return ``g + ĉ − c_k`` for every gradient with a received control ``ĉ``, others as they are.

    ``received``: the download's tensors (``ĉ`` under ``cv/``); ``cstate``: the client's ``c_k``
    under ``cv/`` (zero before its first round).
    """
    import torch

    c_hat, c_k = strip_prefix(received, CV), strip_prefix(cstate, CV)
    out = dict(grads)
    for k, g in grads.items():
        if k in c_hat:
            out[k] = g + c_hat[k] - c_k.get(k, torch.zeros_like(g))
    return out


def control_update(
    start_grad: TensorDict, cstate: TensorDict, scope: str
) -> tuple[TensorDict, TensorDict]:
    """Return ``(Δc_k, c_k⁺)`` under ``cv/`` for the tensors in ``scope``.

    ``c_k⁺ = ∇F_k(x)``, the mean gradient at the received point (``start_grad``), and
    ``Δc_k = c_k⁺ − c_k``; what is out of scope is neither uploaded nor kept.
    """
    import torch

    c_k = strip_prefix(cstate, CV)
    new = {k: g for k, g in start_grad.items() if in_scope(k, scope)}
    delta = {k: g - c_k.get(k, torch.zeros_like(g)) for k, g in new.items()}
    return with_prefix(delta, CV), with_prefix(new, CV)


def updated_control(
    control: TensorDict, uploads: Mapping[int, Upload], rank: int, num_clients: int
) -> TensorDict:
    """Return ``c + (1/N) Σ_k Δc_k``, each upload's ``Δc_k`` (under ``cv/``) resized to ``rank``."""
    new = {k: v.clone() for k, v in control.items()}
    for cid in sorted(uploads):
        for k, d in strip_prefix(uploads[cid].tensors, CV).items():
            new[k] += resize_rank(d, rank, keys.kind_of(k)) / num_clients
    return new
