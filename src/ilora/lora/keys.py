"""The key scheme of every ``TensorDict``: make, parse and select keys in one place.

* ``<module>.lora_A`` ``(r, d_in)``, ``<module>.lora_B`` ``(d_out, r)``, ``<module>.lora_C``
  ``(r, r)``: LoRA factors of an adapted layer;
* ``<module>.experts_A`` ``(K, r_e, d_in)``, ``<module>.experts_B`` ``(K, d_out, r_e)`` (any rank),
  ``<module>.router`` ``(n, d_in)``, ``<module>.expert_map`` ``(n,)`` integers: an optional frozen
  bank of ``K`` LoRA experts routed beside the live pair (see ``LoRALinear``);
* ``<module>.outer_A`` ``(R, d_in)``, ``<module>.outer_B`` ``(d_out, R)`` (frozen),
  ``<module>.inner_A`` ``(R, r)``, ``<module>.inner_B`` ``(r, R)``: an optional nested update, in
  which the rank-``r`` pair updates a rank-``R`` outer pair (mFedLoRU; see ``LoRALinear``);
* ``<module>.residual`` ``(d_out, d_in)``: a dense delta added to the frozen base;
* ``<module>.base`` ``(d_out, d_in)``: the frozen base weight (read-only; templates and contexts);
* ``<ns>/<key>``: an algorithm's own extras that never load into the model (``cv/...``);
* anything else: the path of an ordinary model parameter trained with the adapter (the head).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from typing import Literal
from typing import TypeVar

V = TypeVar("V")

FactorKind = Literal["lora_A", "lora_B", "lora_C"]
FACTOR_KINDS: tuple[FactorKind, ...] = ("lora_A", "lora_B", "lora_C")
EXPERT_KINDS = ("experts_A", "experts_B", "router", "expert_map")
NESTED_KINDS = ("outer_A", "outer_B", "inner_A", "inner_B")
PARAM_KINDS = (*FACTOR_KINDS, "router", "inner_A", "inner_B")  # the trainable layer tensors
LAYER_KINDS = (*FACTOR_KINDS, *EXPERT_KINDS, *NESTED_KINDS, "residual", "base")


def make(module: str, kind: str) -> str:
    """Return the key of ``kind`` (``lora_A``, ``residual``, ...) for ``module``."""
    if kind not in LAYER_KINDS:
        raise ValueError(f"unknown layer key kind {kind!r}; expected one of {LAYER_KINDS}")
    return f"{module}.{kind}"


def parse(key: str) -> tuple[str, str] | None:
    """Return ``(module, kind)`` for a layer key, ``None`` for any other key."""
    if "/" in key:
        return None
    module, _, kind = key.rpartition(".")
    return (module, kind) if module and kind in LAYER_KINDS else None


def kind_of(key: str) -> str:
    """Return a layer kind (``lora_A``, ``residual``, ...), ``extra`` (``ns/...``) or ``param``."""
    parsed = parse(key)
    if parsed is not None:
        return parsed[1]
    return "extra" if "/" in key else "param"


def is_factor(key: str) -> bool:
    return kind_of(key) in FACTOR_KINDS


def is_param(key: str) -> bool:
    """Return True for an ordinary model parameter (the head), FedAvg-ed by every method."""
    return kind_of(key) == "param"


def modules(keys: Iterable[str]) -> list[str]:
    """Return the sorted distinct module names among layer keys."""
    return sorted({p[0] for k in keys if (p := parse(k)) is not None})


def of_kind(d: Mapping[str, V], *kinds: str) -> dict[str, V]:
    """Return the entries of ``d`` whose key is of one of ``kinds`` (see ``kind_of``)."""
    return {k: v for k, v in d.items() if kind_of(k) in kinds}
