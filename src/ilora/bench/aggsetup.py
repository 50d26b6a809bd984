"""Inputs of the aggregation benchmark: each method's own round-1 uploads for one ``d x d`` layer.

The uploads come from the algorithm's own client path, not from hand-built shapes: a model with
one LoRA-adapted ``d x d`` layer and a small head, and the engine's ``client_turn`` (download,
``client_init``, one local AdamW step on 16 synthetic examples, ``upload``, the server's checks),
in round 1 from ``server_init``. So each method is aggregated on the tensors it would receive:
its keys, ranks and extras (control variates, per-client cores, heads). Clients ``k = 0..K-1``
have ranks cycling over ``ranks`` (a single-rank method gets ``uniform_rank`` for everyone) and
seeded example counts in ``[50, 1000)`` as aggregation weights.

The client path runs once per distinct rank (the first client of that rank): some methods' client
start is a full factorization of the frozen ``d x d`` weight (ILoRA's QR, FRLoRA's SVD: about 8
and 90 s each at ``d = 4096`` on one core), which would dominate the benchmark at 32 clients.
Every other client uploads its rank's tensors with seeded noise of 1% of each tensor's RMS
added (same keys, shapes and dtypes; its own weight), so no two uploads are equal.

``dense_svd`` is the reference dense form of ILoRA's aggregation (the FlexLoRA-style path):
form ``ΔW = Σ p_k s_k B_k A_k`` in float64 and take its SVD, truncated to the global rank.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import ilora.algorithms  # noqa: F401  (registers every algorithm)
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.ilora import ILoRAState
from ilora.config import DataConfig
from ilora.config import ExperimentConfig
from ilora.config import TrainConfig
from ilora.engine.turn import client_turn
from ilora.engine.validation import layer_shapes
from ilora.lora.inject import inject
from ilora.lora.linalg import stack
from ilora.lora.spec import LoRASpec
from ilora.lora.state import template
from ilora.seeding import generator
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

RANKS = (4, 8, 16, 32)
UNIFORM_RANK = 16  # single-rank methods: about the mean of RANKS over 12 clients (Σr 192 vs 180)
NUM_CLASSES = 4
EXAMPLES = 16  # per client: one step of batch 8 (two batches for a full-pass statistic)
ROUND = RoundInfo(1, 0)
SPEC = LoRASpec(alpha=16.0)
Aggregate = Callable[[Any, Mapping[int, Upload]], Any]


class OneLayer(nn.Module):
    """``x (b, d) -> layer (d, d) -> ReLU -> head (d, C)``; weights from a seeded generator."""

    def __init__(self, d: int, seed: int = 0) -> None:
        super().__init__()
        self.layer, self.head = nn.Linear(d, d), nn.Linear(d, NUM_CLASSES)
        g = generator(seed, "agg-bench", d)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / d**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.layer(x)))  # type: ignore[no-any-return]  # (b, C)


@dataclass
class Inputs:
    """One method's aggregation inputs: the algorithm, its round-1 state and uploads."""

    algorithm: Algorithm  # type: ignore[type-arg]
    state: Any
    uploads: dict[int, Upload]
    clients: list[ClientInfo]


def methods() -> list[str]:
    """Return every registered method (except the pooled centralized reference) and the forms.

    ``ilora:qr_literal`` is ILoRA with ``redistribute: qr_literal`` (dense QR of ``ΔW``), and
    ``ilora:dense_svd`` the dense reference :func:`dense_svd`, both on ILoRA's uploads.
    """
    names = [n for n in ALGORITHMS.names() if not ALGORITHMS.get(n).pooled_data]
    return [*names, *FORMS]


def source(method: str) -> str:
    """Return the algorithm whose client path makes ``method``'s uploads (``a:form`` -> ``a``)."""
    return method.split(":", 1)[0]


def client_infos(name: str, num_clients: int, seed: int = 0) -> list[ClientInfo]:
    """Return the clients: cycling ranks (or ``UNIFORM_RANK``), seeded example counts."""
    hetero = ALGORITHMS.get(name).heterogeneous_ranks
    g = generator(seed, "agg-bench", "examples")
    counts = torch.randint(50, 1000, (num_clients,), generator=g).tolist()
    return [
        ClientInfo(k, RANKS[k % len(RANKS)] if hetero else UNIFORM_RANK, int(n))
        for k, n in enumerate(counts)
    ]


def build_inputs(name: str, d: int, num_clients: int, seed: int = 0) -> Inputs:
    """Run ``name``'s client path for every client in round 1 and return its inputs."""
    alg = create_algorithm(name)
    clients = client_infos(name, num_clients, seed)
    model = OneLayer(d, seed)
    inject(model, SPEC, [r"^layer$"], head=[r"^head\."])
    cfg = ExperimentConfig(
        algorithm=name,
        lora=SPEC,
        data=DataConfig(num_clients=num_clients, local_test_fraction=0.2),
        train=TrainConfig(steps=1, batch_size=8),
    )
    state = alg.server_init(template(model), clients, SPEC, seed)
    shapes = layer_shapes(template(model))
    firsts: dict[int, tuple[ClientInfo, Upload]] = {}
    uploads: dict[int, Upload] = {}
    for c in clients:
        if c.rank in firsts:
            uploads[c.cid] = jittered(*firsts[c.rank], c, seed)
            continue
        g = generator(seed, "agg-bench", "data", c.cid)
        data = ArrayDataset(
            {"x": torch.randn(EXAMPLES, d, generator=g)},
            torch.randint(0, NUM_CLASSES, (EXAMPLES,), generator=g),
        )
        turn = client_turn(cfg, alg, model, state, {}, c, data, ROUND, cfg.train, shapes)
        if turn.upload is None:
            raise RuntimeError(f"{name}: client {c.cid} produced no upload ({turn.event})")
        uploads[c.cid], firsts[c.rank] = turn.upload, (c, turn.upload)
    return Inputs(alg, state, uploads, clients)


def jittered(first: ClientInfo, up: Upload, client: ClientInfo, seed: int) -> Upload:
    """Return ``up`` (made by ``first``) as ``client``'s: 1%-RMS seeded noise, its own weight."""
    g = generator(seed, "agg-bench", "jitter", client.cid)
    tensors: TensorDict = {}
    for k, t in up.tensors.items():
        if not t.is_floating_point():  # masks, indices: kept as they are
            tensors[k] = t
            continue
        noise = torch.randn(t.shape, generator=g, dtype=t.dtype)
        tensors[k] = t + 0.01 * t.pow(2).mean().sqrt() * noise
    weight = up.weight * client.num_examples / max(1, first.num_examples)
    return Upload(tensors, weight, dict(up.metrics))


def aggregator(method: str, inputs: Inputs) -> Aggregate:
    """Return the server step that ``method`` names, applied to the given inputs' state."""
    form = FORMS.get(method)
    if form is not None:
        return form
    return lambda state, uploads: inputs.algorithm.aggregate(state, uploads, ROUND)


def dense_svd(state: ILoRAState, uploads: Mapping[int, Upload]) -> tuple[torch.Tensor, ...]:
    """Return ``U, S, Vᵀ`` of the dense float64 ``ΔW = Σ p_k s_k B_k A_k``, cut to the rank.

    ILoRA's keys: one adapted layer ``layer``; the head is not aggregated here.
    """
    total = sum(u.weight for u in uploads.values())
    cids = sorted(uploads)
    As = [uploads[c].tensors["layer.lora_A"] for c in cids]
    Bs = [uploads[c].tensors["layer.lora_B"] for c in cids]
    coeffs = [
        uploads[c].weight / total * state.lora.scale(a.shape[0])
        for c, a in zip(cids, As, strict=True)
    ]
    B_c, A_c = stack(Bs, As, coeffs)  # float64 (d_out, Σr), (Σr, d_in)
    dW = B_c @ A_c  # (d_out, d_in): dense on purpose
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)  # (d, d), (d,), (d, d)
    r = state.rank
    return U[:, :r].contiguous(), S[:r].clone(), Vh[:r].contiguous()


def relative_error_vs_dense(state: ILoRAState, uploads: Mapping[int, Upload]) -> float:
    """Return ``‖B A − trunc svd(ΔW)‖_F / ‖trunc svd(ΔW)‖_F`` of ILoRA's factor-space SVD.

    ILoRA with ``redistribute: svd`` on the uploads alone (``offset: per_client``), the same
    ``ΔW`` as :func:`dense_svd`.
    """
    args = {"redistribute": "svd", "offset": "per_client"}
    new = create_algorithm("ilora", args).aggregate(state, uploads, ROUND)
    B, A = new.factors["layer.lora_B"].double(), new.factors["layer.lora_A"].double()
    U, S, Vh = dense_svd(state, uploads)
    ref = (U * S) @ Vh  # (d_out, d_in) float64
    return float(torch.linalg.norm(B @ A - ref) / torch.linalg.norm(ref))


def _qr_literal(state: Any, uploads: Mapping[int, Upload]) -> Any:
    return create_algorithm("ilora", {"redistribute": "qr_literal"}).aggregate(
        state, uploads, ROUND
    )


FORMS: dict[str, Aggregate] = {"ilora:qr_literal": _qr_literal, "ilora:dense_svd": dense_svd}
