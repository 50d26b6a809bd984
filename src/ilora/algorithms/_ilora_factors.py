"""ILoRA's factor arithmetic: the init (QR or LoRA's), its offset, what a client applies, bytes.

Pure functions over ``dict[str, Tensor]`` used by ``ilora.py`` (its module docstring has the
method). Shapes per adapted layer ``(d_out, d_in)`` at rank ``r``: ``lora_B (d_out, r)``,
``lora_A (r, d_in)``, ``residual (d_out, d_in)``; ``s = LoRASpec.scale(r)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._ilora_control import SCOPES
from ilora.algorithms._redistribution import Terms
from ilora.algorithms._robust_products import median_of_products
from ilora.algorithms._shared import init_factors
from ilora.lora import keys
from ilora.lora.linalg import balanced_split
from ilora.lora.linalg import qr_init
from ilora.lora.linalg import resize_rank
from ilora.lora.memo import PairMemo
from ilora.lora.spec import LoRASpec
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

CHOICES = {  # ILoRA's Literal hyperparameters and their values, checked in __post_init__
    "init": ("qr", "lora"),
    "redistribute": ("qr", "svd", "qr_literal"),
    "split": ("qr", "balanced"),
    "offset": ("shared", "per_client"),
    "init_offset": ("alpha_over_r", "one"),
    "control_scope": SCOPES,
}
# every client_init rebuilds the same QR init from the same frozen base: computed once per
# weight and rank (64 MiB holds the rank-16 factors of about 500 layers of MiniLM's size)
_QR_MEMO = PairMemo(max_bytes=64 << 20)


def qr_factors(base: Mapping[str, torch.Tensor], r: int, init_rms: float) -> TensorDict:
    """Return the QR init of every layer at rank ``r`` (memoized on the weights' bytes).

    ``init_rms`` is the RMS of the initial ``BA``; 0 keeps the raw ``Q``, ``R``.
    """
    out: TensorDict = {}
    rms = init_rms or None
    for m in keys.modules(base):
        W0 = base[keys.make(m, "base")]
        B, A = _QR_MEMO.get(W0, (r, rms), partial(qr_init, W0, r, rms))
        out[keys.make(m, "lora_B")], out[keys.make(m, "lora_A")] = B, A
    return out


def initial_factors(
    init: str, base: Mapping[str, torch.Tensor], r: int, lora: LoRASpec, init_rms: float, seed: int
) -> TensorDict:
    """Return the init of every layer at rank ``r``: ``qr`` (the paper's) or ``lora`` (ablation).

    ``lora``: standard LoRA, ``B = 0`` and ``A`` drawn as every LoRA method here draws it
    (``_shared.init_factors``, PEFT's kaiming-uniform under ``lora.init: kaiming``) from the run
    seed under FedIT's label, so a seed gives FedIT's ``A``. The server (``server_init``) and each
    client (``ctx.rnd.seed``) know that seed and draw the same ``A`` bitwise: the download
    carries no init, as with the QR init, which both rebuild from ``W0``.
    """
    if init == "lora":
        return init_factors(base, r, lora, seed, "lora-init")
    return qr_factors(base, r, init_rms)


def base_offset(init: Mapping[str, torch.Tensor], s: float, init_offset: str) -> TensorDict:
    """Return ``−o B_0 A_0`` per layer, ``o = s`` (``alpha_over_r``) or 1 (``one``)."""
    o = s if init_offset == "alpha_over_r" else 1.0
    return {
        keys.make(m, "residual"): -o * (init[keys.make(m, "lora_B")] @ init[keys.make(m, "lora_A")])
        for m in keys.modules(init)
    }  # (d_out, r) @ (r, d_in)


def folded(
    init: Mapping[str, torch.Tensor], lora: LoRASpec, r: int, fold_scaling: bool
) -> TensorDict:
    """Return the rank-``r`` init as global factors: ``A`` times ``s(r)`` when folding."""
    s = lora.scale(r) if fold_scaling else 1.0
    return {k: s * v if keys.kind_of(k) == "lora_A" else v for k, v in init.items()}


def client_factors(
    glob: TensorDict, r: int, lora: LoRASpec, fold_scaling: bool, split: str
) -> TensorDict:
    """Return what a rank-``r`` client applies: the leading ``r`` components, split, ``A/s``."""
    s = lora.scale(r) if fold_scaling else 1.0
    out: TensorDict = {}
    for m in keys.modules(glob):
        B = resize_rank(glob[keys.make(m, "lora_B")], r, "lora_B")  # (d_out, r)
        A = resize_rank(glob[keys.make(m, "lora_A")], r, "lora_A")  # (r, d_in)
        if split == "balanced":
            B, A = balanced_split(B, A)
        out[keys.make(m, "lora_B")], out[keys.make(m, "lora_A")] = B, (A / s).contiguous()
    return out


def client_terms(
    uploads: Mapping[int, Upload], p: Mapping[int, float], m: str, lora: LoRASpec, fold: bool
) -> Terms:
    """Return the clients' ``(B_k, A_k, c_k)`` of layer ``m``, ``c_k = p_k s(r_k)`` when ``fold``.

    ``c_k = p_k`` otherwise; in client order. ``B_k (d_out, r_k)``, ``A_k (r_k, d_in)``.
    """
    cids = sorted(uploads)
    Bs = [uploads[c].tensors[keys.make(m, "lora_B")] for c in cids]
    As = [uploads[c].tensors[keys.make(m, "lora_A")] for c in cids]
    coeffs = [
        p[c] * (lora.scale(a.shape[0]) if fold else 1.0) for c, a in zip(cids, As, strict=True)
    ]
    return Bs, As, coeffs


def robust_terms(terms: Terms, p: Mapping[int, float], uploads: Mapping[int, Upload]) -> Terms:
    """Replace the clients' terms by the median of their products; keep any terms after them.

    The terms after the clients' own (the global components not every client held, under the
    shared offset) are the server's, not the clients': they stay as they are.
    """
    n = len(uploads)
    Bs, As, coeffs = terms
    med_B, med_A, med_c = median_of_products((Bs[:n], As[:n], coeffs[:n]), p, uploads)
    return med_B + Bs[n:], med_A + As[n:], med_c + coeffs[n:]


# ---- bytes per client per round, float32 floats (down, up); registered in ilora.py
def floats_per_round(s: traffic.Shapes, c: traffic.Contact) -> tuple[int, int]:
    """Round 1 only the head down (clients build the same init); then B, A at ``r_k``.

    Up: B, A at ``r_k`` and the head. With ``control_variates`` (``ilora-s``) the control
    variate ``c`` at the client's rank goes down and ``Δc_k`` comes up, each sized as the tensors
    in ``control_scope``: B, A at ``r_k`` (``adapters``), the head (``head``) or both (``all``).
    """
    down = s.n_head if c.round == 1 else s.pair(c.rank) + s.n_head
    up = s.pair(c.rank) + s.n_head
    control = 0
    if c.hp.get("control_variates", False):
        scope = c.hp.get("control_scope", "all")
        control = (s.pair(c.rank) if scope != "head" else 0) + (
            s.n_head if scope != "adapters" else 0
        )
    return down + control, up + control
