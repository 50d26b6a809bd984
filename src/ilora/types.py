"""Boundary types: everything that crosses download, upload, client state or a checkpoint.

Each is a frozen dataclass of ``TensorDict``s and scalars, so it maps 1:1 onto Flower records
and onto safetensors. Key scheme of a ``TensorDict`` (see ``ilora.lora.keys``):
``<module>.lora_A|lora_B|lora_C|residual|base`` for adapted layers, a model parameter path such
as ``classifier.weight`` for other trainable tensors (the head), and ``<ns>/<key>`` for an
algorithm's own extras (for example ``cv/<key>`` for control variates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ilora.config import TrainConfig
    from ilora.lora.spec import LoRASpec

TensorDict = dict[str, "torch.Tensor"]
Scalars = dict[str, int | float | str | bool]


@dataclass(frozen=True)
class ClientInfo:
    """What the server knows of one client: its id, LoRA rank and number of training examples."""

    cid: int
    rank: int
    num_examples: int


@dataclass(frozen=True)
class RoundInfo:
    """The current round (1-based) and the run seed."""

    round: int
    seed: int


@dataclass(frozen=True)
class Payload:
    """What the server sends one client at the start of a round."""

    tensors: TensorDict
    config: Scalars = field(default_factory=dict)


@dataclass(frozen=True)
class Upload:
    """What one client sends back: tensors, an aggregation weight and local metrics.

    ``diagnostics`` is reporting only: the client's dense change of the round per adapted layer
    (``engine.diagnostics``), read for ``agg_error``; it is never aggregated, not counted in
    ``bytes_up`` and not sent under differential privacy.
    """

    tensors: TensorDict
    weight: float
    metrics: dict[str, float] = field(default_factory=dict)
    diagnostics: TensorDict = field(default_factory=dict)


@dataclass(frozen=True)
class LocalSetup:
    """What a model is loaded with: LoRA factors and head, an optional dense residual per layer.

    ``trainable`` names the keys of ``factors`` that are trained; ``None`` means all of them.
    ``steps`` (a round in phases, e.g. pFedLoRU's personal then global branch): train this setup
    for that many local steps only, then the loop calls ``client_init`` again, with ``ctx.step``
    the steps done and ``ctx.trained`` what was trained, for the next setup (a fresh optimizer);
    ``None`` means the rest of the round.
    """

    factors: TensorDict
    residual: TensorDict = field(default_factory=dict)
    trainable: frozenset[str] | None = None
    steps: int | None = None


@dataclass(frozen=True)
class Features:
    """The frozen backbone's features of a client's local examples: what its head receives.

    ``inputs`` ``(N, d)`` are the (flattened) inputs of the head computed with every adapter and
    residual removed, ``labels`` ``(N,)`` their classes, ``num_classes`` the model's output width.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    num_classes: int


@dataclass(frozen=True)
class ClientContext:
    """Everything a client hook may read. ``base`` maps ``<module>.base`` to frozen weights.

    ``start_grad`` is the mean gradient of the local loss at the received point, computed by the
    training loop before local training when the algorithm asks for it (SCAFFOLD option I).
    ``features`` holds the frozen backbone's head inputs of the local data, computed by the loop
    before ``client_init`` when ``backbone_feature_batches`` asks for them (CE-LoRA statistics).
    ``trained`` is ``None`` at the start of a round; when a setup's phase ends
    (``LocalSetup.steps``) the loop sets it to the tensors trained so far (factors and head)
    and calls ``client_init`` again.
    """

    client: ClientInfo
    rnd: RoundInfo
    payload: Payload
    lora: LoRASpec
    train: TrainConfig
    base: Mapping[str, torch.Tensor]
    step: int = 0
    start_grad: TensorDict | None = None
    features: Features | None = None
    trained: TensorDict | None = None
