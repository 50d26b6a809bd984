"""Server-side checks of an upload before it can reach ``aggregate``; optional norm clipping.

An upload is compared with what its client was sent (``Payload``) and what it announced (its
rank). Rules, in order (the first broken one is the reason):

1. every floating tensor is finite;
2. a key the client was also sent keeps that shape, except that a factor may come back at a
   smaller rank (``lora_A`` rows, ``lora_B`` columns: HetLoRA's pruning);
3. a new key of a standard kind names an adapted layer of the model: ``lora_A (r, d_in)`` /
   ``lora_B (d_out, r)`` with ``1 <= r <=`` the client's rank, ``lora_C`` square within it;
   a head key has the head's shape; algorithm extras (``ns/...``) pass rules 2-3;
4. the update's norm ``‖u − sent‖`` (keys sent with the same shape; the tensor itself
   otherwise), over all tensors, is at most ``max_norm`` (0 disables it).

The upload's aggregation weight (:func:`check_weight`, ``fed.weighting: examples`` only; under
``uniform`` the server sets every weight to 1 and ignores the reported one) must be finite,
positive and at most the example count the client announced when it joined (the embedded
engine's partition; on Flower the handshake), and at most ``fed.max_weight`` when that is set:
the announced count is the client's own word, so only the cap bounds a client that lied then.

``clip_update`` scales that same difference down to a norm bound (robust aggregation against
scaled updates); keys not sent are scaled as they are.

A sign-flipped update keeps its honest norm, so no bound on one upload sees it. Across the
round's accepted uploads, :func:`direction_screen` (``fed.min_cosine``) compares each update
``δ_k = u_k − sent_k`` with the coordinate-wise median ``m`` of all of them and rejects those
with ``cos(δ_k, m) < min_cosine``. Updates of different shapes (mixed ranks) are compared in one
space: every tensor zero-padded to the largest shape of its key, the way a lower-rank factor
enters a padded mean. With fewer than 3 updates the median is no reference and nothing is
screened. This screen is the project's own (a median reference, as in the robust statistics of
:mod:`ilora.engine.robust`). It separates a flipped update only where honest updates agree
with each other: with label skew and AdamW the clients' updates can be nearly orthogonal, so a
flipped one barely points away (the fault campaign in docs/RESULTS.md measures how many it
catches); an honest update pointing away is rejected and counted like any other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ilora.engine.robust import coordinate_median
from ilora.lora import keys
from ilora.types import ClientInfo
from ilora.types import TensorDict

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]


def layer_shapes(template: Mapping[str, torch.Tensor]) -> dict[str, Shape]:
    """Return ``module -> (d_out, d_in)`` and ``head key -> shape`` from a model template."""
    out: dict[str, Shape] = {}
    for k, v in template.items():
        parsed = keys.parse(k)
        if parsed is not None and parsed[1] == "base":
            out[parsed[0]] = tuple(v.shape)
        elif keys.kind_of(k) == "param":
            out[k] = tuple(v.shape)
    return out


def _delta(key: str, value: torch.Tensor, sent: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Return ``value − sent[key]`` when the key was sent with this shape, else ``value``."""
    import torch

    ref = sent.get(key)
    if ref is not None and ref.shape == value.shape and value.is_floating_point():
        return value.to(torch.float64) - ref.to(torch.float64)
    return value.to(torch.float64)


def update_norm(upload: Mapping[str, torch.Tensor], sent: Mapping[str, torch.Tensor]) -> float:
    """Return ``sqrt(Σ ‖delta‖²)`` over the upload's floating tensors (see the module doc)."""
    total = sum(
        float(_delta(k, v, sent).square().sum()) for k, v in upload.items() if v.is_floating_point()
    )
    return math.sqrt(total)


def _rank_dim(kind: str, shape: Shape) -> int:
    return shape[0] if kind == "lora_A" else shape[1]


def _shape_error(
    key: str,
    shape: Shape,
    sent: Mapping[str, torch.Tensor],
    client: ClientInfo,
    model: Mapping[str, Shape],
) -> str | None:
    """Return why ``key``'s shape is wrong, or None."""
    kind = keys.kind_of(key)
    if key in sent:
        ref = tuple(sent[key].shape)
        if shape == ref:
            return None
        if kind in ("lora_A", "lora_B") and len(shape) == 2:
            other = 1 if kind == "lora_A" else 0
            if shape[other] == ref[other] and 1 <= _rank_dim(kind, shape) <= _rank_dim(kind, ref):
                return None
        return f"{key} has shape {list(shape)}, expected {list(ref)} (as sent)"
    if kind == "extra":
        return None
    if kind == "param":
        want = model.get(key)
        return None if want == shape else f"{key}: unknown head tensor or shape {list(shape)}"
    module = key.rpartition(".")[0]  # a layer key: kind_of found a layer kind
    if module not in model:
        return f"{key}: no adapted layer {module!r} in this model"
    d_out, d_in = model[module]
    r = client.rank
    ok = {
        "lora_A": len(shape) == 2 and shape[1] == d_in and 1 <= shape[0] <= r,
        "lora_B": len(shape) == 2 and shape[0] == d_out and 1 <= shape[1] <= r,
        "lora_C": len(shape) == 2 and shape[0] == shape[1] and 1 <= shape[0] <= r,
    }.get(kind, True)
    return None if ok else f"{key} has shape {list(shape)}, not valid at rank {r}"


def check_upload(
    upload: Mapping[str, torch.Tensor],
    sent: Mapping[str, torch.Tensor],
    client: ClientInfo,
    model: Mapping[str, Shape],
    max_norm: float = 0.0,
) -> str | None:
    """Return the reason to reject ``upload`` (see the module docstring), or None to accept it.

    ``model`` is :func:`layer_shapes` of the model's template.
    """
    import torch

    for key, value in upload.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"non-finite values in {key}"
    for key, value in upload.items():
        if (err := _shape_error(key, tuple(value.shape), sent, client, model)) is not None:
            return err
    if max_norm > 0 and (norm := update_norm(upload, sent)) > max_norm:
        return f"update norm {norm:.4g} exceeds fed.max_update_norm {max_norm:g}"
    return None


def check_weight(weight: float, client: ClientInfo, max_weight: float = 0.0) -> str | None:
    """Return the reason to reject an upload's reported aggregation ``weight``, or None.

    See the module docstring; ``max_weight`` 0 leaves only the announced count as the bound.
    """
    if not math.isfinite(weight):
        return f"aggregation weight {weight} is not finite"
    if weight <= 0:
        return f"aggregation weight {weight:g} is not positive"
    if weight > client.num_examples:
        return (
            f"aggregation weight {weight:g} exceeds the {client.num_examples} examples the "
            "client announced"
        )
    if max_weight > 0 and weight > max_weight:
        return f"aggregation weight {weight:g} exceeds fed.max_weight {max_weight:g}"
    return None


def clip_update(
    upload: Mapping[str, torch.Tensor], sent: Mapping[str, torch.Tensor], bound: float
) -> TensorDict:
    """Return ``upload`` with its update (``u − sent``) scaled to norm at most ``bound``."""
    import torch

    norm = update_norm(upload, sent)
    if norm <= bound or norm == 0.0:
        return dict(upload)
    factor = bound / norm
    out: TensorDict = {}
    for k, v in upload.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        ref = sent.get(k)
        base = ref.to(torch.float64) if ref is not None and ref.shape == v.shape else 0.0
        out[k] = (base + factor * _delta(k, v, sent)).to(v.dtype)
    return out


def _padded(t: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Return ``t`` zero-padded at the end of every axis to ``shape``."""
    out = t.new_zeros(shape)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def update_vectors(
    uploads: Mapping[int, Mapping[str, torch.Tensor]],
    sent: Mapping[int, Mapping[str, torch.Tensor]],
) -> dict[int, torch.Tensor]:
    """Return every client's update ``u − sent`` flattened in one shared space (float64).

    Keys are the union over the clients, sorted; each tensor is zero-padded to its key's
    largest shape (a missing key is all zeros). A key whose number of axes differs between
    clients (an algorithm extra the checks do not shape) is left out of the comparison.
    """
    deltas = {
        c: {k: _delta(k, v, sent[c]) for k, v in u.items() if v.is_floating_point()}
        for c, u in uploads.items()
    }
    shapes: dict[str, Shape] = {}
    mixed: set[str] = set()
    for d in deltas.values():
        for k, v in d.items():
            old = shapes.get(k, (0,) * v.dim())
            if len(old) != v.dim():
                mixed.add(k)
                continue
            shapes[k] = tuple(max(a, b) for a, b in zip(old, v.shape, strict=True))
    for k in mixed:
        del shapes[k]
    return {c: _flat(d, shapes) for c, d in deltas.items()}


def _flat(delta: Mapping[str, torch.Tensor], shapes: Mapping[str, Shape]) -> torch.Tensor:
    """Return ``delta`` padded to ``shapes`` and flattened in sorted key order (zeros if absent)."""
    import torch

    zero = torch.zeros((), dtype=torch.float64)
    parts = [_padded(delta.get(k, zero.expand(shapes[k])), shapes[k]) for k in sorted(shapes)]
    return torch.cat([p.reshape(-1) for p in parts])


def direction_screen(
    uploads: Mapping[int, Mapping[str, torch.Tensor]],
    sent: Mapping[int, Mapping[str, torch.Tensor]],
    min_cosine: float,
) -> dict[int, str]:
    """Return the reason to reject each update pointing away from the round's median update.

    See the module docstring; ``min_cosine <= -1`` or fewer than 3 uploads screen nothing.
    """
    import torch

    if min_cosine <= -1.0 or len(uploads) < 3:
        return {}
    vectors = update_vectors(uploads, sent)
    cids = sorted(vectors)
    stack = torch.stack([vectors[c] for c in cids])  # (n, D)
    median = coordinate_median(stack)  # (D,)
    m_norm = float(median.norm())
    out: dict[int, str] = {}
    for c, v in zip(cids, stack, strict=True):
        v_norm = float(v.norm())
        if m_norm == 0.0 or v_norm == 0.0:
            continue
        cos = float(v @ median) / (v_norm * m_norm)
        if cos < min_cosine:
            out[c] = (
                f"update direction has cosine {cos:.3f} with the round's median update, below "
                f"fed.min_cosine {min_cosine:g}"
            )
    return out
