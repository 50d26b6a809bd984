"""One sampled client's turn in a round: faults, local training, DP, the server's checks.

The turn has two sides, so that both runtimes share them: :func:`client_work` is what runs on
the client (its injected fault, local training, the canonical upload, clipped and noised under
``dp``) and :func:`server_check` is what the server does with an arriving upload (validation,
clipping); :func:`screen_round` then compares the round's accepted uploads with each other
(``fed.min_cosine``). The embedded engine
calls :func:`client_turn`, which chains download, client side and server side; the Flower
runtime sends the download as a message, runs :func:`client_work` in the ``ClientApp`` and
:func:`server_check` in the strategy.

A lost or refused update yields an event for ``history.jsonl`` (``{"cid", "outcome",
"reason"}``, outcome ``failed`` for a lost update and ``rejected`` for one the server refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import Algorithm
from ilora.config import ExperimentConfig
from ilora.config import TrainConfig
from ilora.engine import faults
from ilora.engine.local import client_round
from ilora.engine.privacy import privatize
from ilora.engine.sampling import num_sampled
from ilora.engine.validation import Shape
from ilora.engine.validation import check_upload
from ilora.engine.validation import check_weight
from ilora.engine.validation import clip_update
from ilora.engine.validation import direction_screen
from ilora.tasks.base import ArrayDataset
from ilora.tensors import canonical
from ilora.tensors import num_bytes
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload


@dataclass(frozen=True)
class Turn:
    """What one client's turn produced (see the module docstring)."""

    upload: Upload | None
    cstate: TensorDict
    down: int
    up: int
    event: dict[str, Any] | None = None
    payload: Payload | None = None  # what the client was sent (the reference of its update)


@dataclass(frozen=True)
class Work:
    """The client side of a turn: what it sends (None when lost), its state, and the fault.

    ``fault`` is the injected fault (None for a healthy client); ``trained`` tells whether the
    client got as far as training (a crash or an early dropout leaves its state unchanged).
    """

    upload: Upload | None
    cstate: TensorDict
    fault: str | None
    trained: bool


def canonical_payload(p: Payload) -> Payload:
    return replace(p, tensors=canonical(p.tensors, torch.float32))


def canonical_upload(u: Upload, weighting: str) -> Upload:
    weight = 1.0 if weighting == "uniform" else float(u.weight)
    return replace(u, tensors=canonical(u.tensors, torch.float32), weight=weight)


def client_work(
    cfg: ExperimentConfig,
    alg: Algorithm,  # type: ignore[type-arg]
    model: nn.Module,
    payload: Payload,
    cstate: TensorDict,
    client: ClientInfo,
    data: ArrayDataset,
    rnd: RoundInfo,
    train: TrainConfig,
) -> Work:
    """Run the client's side of its turn on the (canonical) ``payload`` it received."""
    fault = faults.draw(cfg.faults, cfg.seed, rnd.round, client.cid)
    if fault in ("dropout_before", "crash"):  # never finished: the state is unchanged
        return Work(None, cstate, fault, trained=False)
    result, new_state = client_round(
        alg, model, data, payload, cstate, client, rnd, cfg.lora, train
    )
    if fault in ("straggler", "dropout_after"):  # trained locally; the server never hears
        return Work(None, new_state, fault, trained=True)
    upload = canonical_upload(result, cfg.fed.weighting)
    if cfg.dp.enabled:  # on the client, before the upload leaves it (engine.privacy)
        m = num_sampled(cfg.data.num_clients, cfg.fed.fraction)
        seed = (cfg.seed, "dp-noise", rnd.round, client.cid)
        noised = privatize(upload.tensors, payload.tensors, cfg.dp, m, *seed)
        upload = replace(upload, tensors=noised, diagnostics={})  # ΔW_k would bypass the noise
    if fault is not None:
        bad = faults.corrupt(fault, upload.tensors, payload.tensors, cfg.faults)
        upload = replace(upload, tensors=bad)
    return Work(upload, new_state, fault, trained=True)


def server_check(
    cfg: ExperimentConfig,
    upload: Upload,
    payload: Payload,
    client: ClientInfo,
    shapes: Mapping[str, Shape],
    fault: str | None = None,
) -> tuple[Upload | None, dict[str, Any] | None]:
    """Return the upload as the server accepts it (clipped), or None and the rejection event.

    Under ``fed.weighting: uniform`` the reported weight is replaced by 1; otherwise it must
    pass :func:`~ilora.engine.validation.check_weight`.
    """
    fed = cfg.fed
    reason = None
    if fed.weighting == "uniform":
        upload = replace(upload, weight=1.0)  # whatever the client reported
    else:
        reason = check_weight(upload.weight, client, fed.max_weight)
    if reason is None:
        reason = check_upload(upload.tensors, payload.tensors, client, shapes, fed.max_update_norm)
    if reason is not None:
        return None, failure_event(client, "rejected", reason, fault)
    bound = dp_server_clip(cfg)
    if fed.clip_update_norm > 0:
        bound = min(bound, fed.clip_update_norm) if bound > 0 else fed.clip_update_norm
    if bound > 0:
        upload = replace(upload, tensors=clip_update(upload.tensors, payload.tensors, bound))
    return upload, None


def dp_server_clip(cfg: ExperimentConfig) -> float:
    """Return the bound the server clips noisy updates to, for its method's math (0: none).

    A method whose server multiplies uploaded factors (``Algorithm.multiplies_uploads``:
    ILoRA's ``Σ p_k s_k B_k A_k``) turns per-upload DP noise into noise scaled by the other
    factor: the global product grows geometrically round after round and the run ends
    non-finite. The server clips each noisy update back to ``dp.clip_norm``: post-processing
    of the released upload, so the privacy guarantee is unchanged (docs/SECURITY.md).
    """
    dp = cfg.dp
    if dp.noise_multiplier == 0 or not ALGORITHMS.get(cfg.algorithm).multiplies_uploads:
        return 0.0
    return dp.clip_norm


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
    if faults.draw(cfg.faults, cfg.seed, rnd.round, client.cid) == "dropout_before":
        return Turn(None, cstate, 0, 0, failure_event(client, "failed", "dropout_before"))
    payload = canonical_payload(alg.download(state, client, rnd))
    down = num_bytes(payload.tensors)
    work = client_work(cfg, alg, model, payload, cstate, client, data, rnd, train)
    if work.upload is None:
        assert work.fault is not None
        return Turn(None, work.cstate, down, 0, failure_event(client, "failed", work.fault))
    up = num_bytes(work.upload.tensors)
    upload, event = server_check(cfg, work.upload, payload, client, shapes, work.fault)
    return Turn(upload, work.cstate, down, up, event, payload)


def screen_round(
    cfg: ExperimentConfig,
    uploads: Mapping[int, Upload],
    sent: Mapping[int, Payload],
    clients: Sequence[ClientInfo],
) -> tuple[dict[int, Upload], list[dict[str, Any]]]:
    """Return the round's uploads that pass ``fed.min_cosine`` and the rejection events.

    The server side of the round after every upload's own checks (``direction_screen``).
    """
    tensors = {c: u.tensors for c, u in uploads.items()}
    reasons = direction_screen(tensors, {c: sent[c].tensors for c in uploads}, cfg.fed.min_cosine)
    events = [failure_event(clients[c], "rejected", r) for c, r in sorted(reasons.items())]
    return {c: u for c, u in uploads.items() if c not in reasons}, events


def failure_event(
    client: ClientInfo, outcome: str, reason: str, fault: str | None = None
) -> dict[str, Any]:
    """Return the ``history.jsonl`` event of a lost (``failed``) or ``rejected`` update."""
    event: dict[str, Any] = {"cid": client.cid, "outcome": outcome, "reason": reason}
    if fault is not None and fault != reason:
        event["fault"] = fault  # the injected cause of a rejection
    return event
