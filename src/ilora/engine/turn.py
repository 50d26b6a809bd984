"""One sampled client's turn in a round: faults, local training, the server's checks.

The embedded engine calls :func:`client_turn` for every sampled client; it returns the accepted
upload (or None), the client's new state, the bytes that travelled and, when the update was
lost or refused, an event for ``history.jsonl`` (``{"cid", "outcome", "reason"}``, outcome
``failed`` for a lost update and ``rejected`` for one the server refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ilora.algorithms.base import Algorithm
from ilora.config import ExperimentConfig, TrainConfig
from ilora.engine import faults
from ilora.engine.local import client_round
from ilora.engine.validation import Shape, check_upload, clip_update
from ilora.tasks.base import ArrayDataset
from ilora.tensors import canonical, num_bytes
from ilora.types import ClientInfo, Payload, RoundInfo, TensorDict, Upload


@dataclass(frozen=True)
class Turn:
    """What one client's turn produced (see the module docstring)."""

    upload: Upload | None
    cstate: TensorDict
    down: int
    up: int
    event: dict[str, Any] | None = None


def canonical_payload(p: Payload) -> Payload:
    return replace(p, tensors=canonical(p.tensors, torch.float32))


def canonical_upload(u: Upload, weighting: str) -> Upload:
    weight = 1.0 if weighting == "uniform" else float(u.weight)
    return replace(u, tensors=canonical(u.tensors, torch.float32), weight=weight)


def client_turn(
    cfg: ExperimentConfig,
    alg: Algorithm,  # type: ignore[type-arg]
    model: nn.Module,
    state: Any,
    cstate: TensorDict,
    client: ClientInfo,
    data: ArrayDataset,
    rnd: RoundInfo,
    train: TrainConfig,
    shapes: Mapping[str, Shape],
) -> Turn:
    """Run ``client``'s turn in round ``rnd`` (see the module docstring)."""
    fault = faults.draw(cfg.faults, cfg.seed, rnd.round, client.cid)
    if fault == "dropout_before":
        return Turn(None, cstate, 0, 0, _event(client, "failed", fault))
    payload = canonical_payload(alg.download(state, client, rnd))
    down = num_bytes(payload.tensors)
    if fault == "crash":  # the client's state is not updated: it never finished
        return Turn(None, cstate, down, 0, _event(client, "failed", fault))
    result, new_state = client_round(
        alg, model, data, payload, cstate, client, rnd, cfg.lora, train
    )
    if fault in ("straggler", "dropout_after"):  # trained locally; the server never hears
        return Turn(None, new_state, down, 0, _event(client, "failed", fault))
    upload = canonical_upload(result, cfg.fed.weighting)
    if fault is not None:
        bad = faults.corrupt(fault, upload.tensors, payload.tensors, cfg.faults)
        upload = replace(upload, tensors=bad)
    up = num_bytes(upload.tensors)
    fed = cfg.fed
    reason = check_upload(upload.tensors, payload.tensors, client, shapes, fed.max_update_norm)
    if reason is not None:
        return Turn(None, new_state, down, up, _event(client, "rejected", reason, fault))
    if fed.clip_update_norm > 0:
        clipped = clip_update(upload.tensors, payload.tensors, fed.clip_update_norm)
        upload = replace(upload, tensors=clipped)
    return Turn(upload, new_state, down, up)


def _event(
    client: ClientInfo, outcome: str, reason: str, fault: str | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {"cid": client.cid, "outcome": outcome, "reason": reason}
    if fault is not None and fault != reason:
        event["fault"] = fault  # the injected cause of a rejection
    return event
