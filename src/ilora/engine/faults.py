"""Seeded fault injection for the embedded engine (config section ``faults``).

Each sampled client draws at most one fault per round from ``generator(seed, "fault", round,
cid)``, so a faulty run is as reproducible as a clean one. Faults before an upload exists
(``dropout_before``, ``crash``, ``straggler``, ``dropout_after``) lose the client's update;
the others corrupt the upload, which then meets the server's checks
(``engine.validation``): ``nan``, ``wrong_keys`` and ``wrong_shape`` are always rejected,
``exploding`` (update x 1e6) when ``fed.max_update_norm`` is set; the Byzantine ``sign_flip``
and ``scale`` (update x ``scale_factor``) look valid and are tamed by
``fed.clip_update_norm``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import torch

from ilora.config import FAULT_KINDS
from ilora.config import FaultConfig
from ilora.seeding import generator
from ilora.types import TensorDict

LOST = ("dropout_before", "crash", "straggler", "dropout_after")
EXPLODING_FACTOR = 1e6


def draw(faults: FaultConfig, seed: int, rnd: int, cid: int) -> str | None:
    """Return the fault client ``cid`` suffers in round ``rnd``, or None."""
    u = float(torch.rand(1, generator=generator(seed, "fault", rnd, cid)))
    edge = 0.0
    for kind in FAULT_KINDS:
        edge += getattr(faults, kind)
        if u < edge:
            return kind
    return None


def injects(faults: FaultConfig) -> bool:
    """Return True when ``faults`` gives any fault kind a positive probability."""
    return any(getattr(faults, kind) > 0 for kind in FAULT_KINDS)


def round_counts(
    faults: FaultConfig, seed: int, rnd: int, sampled: Sequence[int], events: Sequence[Any]
) -> dict[str, list[int]]:
    """Return ``kind -> [injected, failed, rejected, accepted]`` over round ``rnd``'s sample.

    ``sampled`` are the clients the round actually sampled and ``events`` its lost, rejected
    and screened-out updates (with their ``cid``). A client without a fault counts under
    ``honest`` (an honest update the server rejected shows there). Only these counts are
    recorded, never who was sampled (docs/SECURITY.md, secrecy of sampling). Empty when
    ``faults`` injects nothing.
    """
    table: dict[str, list[int]] = {}
    if not injects(faults):
        return table
    outcome = {e["cid"]: e["outcome"] for e in events}
    for cid in sampled:
        row = table.setdefault(draw(faults, seed, rnd, cid) or "honest", [0, 0, 0, 0])
        row[0] += 1
        got = outcome.get(cid)
        row[3 if got is None else 1 if got == "failed" else 2] += 1
    return table


def _with_update(
    upload: Mapping[str, torch.Tensor], sent: Mapping[str, torch.Tensor], factor: float
) -> TensorDict:
    """Return ``sent + factor · (u − sent)`` per key (``factor · u`` for keys not sent)."""
    out: TensorDict = {}
    for k, v in upload.items():
        ref = sent.get(k)
        if not v.is_floating_point():
            out[k] = v
        elif ref is not None and ref.shape == v.shape:
            out[k] = (ref + factor * (v - ref)).to(v.dtype)
        else:
            out[k] = factor * v
    return out


def corrupt(
    kind: str,
    upload: Mapping[str, torch.Tensor],
    sent: Mapping[str, torch.Tensor],
    faults: FaultConfig,
) -> TensorDict:
    """Return the upload as a client with fault ``kind`` would send it (see the module doc)."""
    out = dict(upload)
    first = sorted(k for k, v in upload.items() if v.is_floating_point())[0]
    if kind == "nan":
        t = out[first].clone()
        t.view(-1)[0] = float("nan")
        out[first] = t
    elif kind == "wrong_keys":
        out[first + "_renamed"] = out.pop(first)
    elif kind == "wrong_shape":
        t = out[first]
        out[first] = torch.cat([t, t.new_zeros(1, *t.shape[1:])])  # one extra row
    elif kind == "exploding":
        out = _with_update(upload, sent, EXPLODING_FACTOR)
    elif kind == "sign_flip":
        out = _with_update(upload, sent, -1.0)
    elif kind == "scale":
        out = _with_update(upload, sent, faults.scale_factor)
    else:
        raise ValueError(f"{kind!r} does not corrupt an upload")
    return out
