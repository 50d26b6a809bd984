"""The one local loop: hook order, what the optimizer sees, what stays frozen."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

import torch

from conftest import TinySetup
from conftest import tiny_data
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import init_factors
from ilora.algorithms.base import Algorithm
from ilora.config import TrainConfig
from ilora.engine.compute import place
from ilora.engine.local import batch_indices
from ilora.engine.local import client_round
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.lora.state import template
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload


@dataclass(frozen=True)
class Recorder(Algorithm[FactorState]):
    """A test double that records every client hook call (not registered)."""

    calls: list[str] = field(default_factory=list)
    grad_value: float | None = None  # when set, grad_transform replaces every gradient by it
    extra: float = 0.0  # loss_term = extra * sum of all parameters
    seen: list[TensorDict] = field(default_factory=list)

    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        head = keys.of_kind(template, "param")
        return FactorState({**init_factors(template, 2, lora, seed), **head}, lora, 2)

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        return Payload(dict(state.tensors))

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        return state

    def export(self, state: FactorState) -> LocalSetup:
        return LocalSetup(dict(state.tensors))

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        self.calls.append("client_init")
        return LocalSetup(dict(ctx.payload.tensors)), cstate

    def loss_term(
        self, params: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> torch.Tensor | None:
        self.calls.append(f"loss_term:{ctx.step}")
        return self.extra * sum(p.sum() for p in params.values()) if self.extra else None  # type: ignore[return-value]

    def grad_transform(
        self, grads: TensorDict, params: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> TensorDict:
        self.calls.append(f"grad_transform:{ctx.step}")
        self.seen.append({k: g.clone() for k, g in grads.items()})
        if self.grad_value is None:
            return grads
        return {k: torch.full_like(g, self.grad_value) for k, g in grads.items()}

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        self.calls.append("upload")
        return Upload(dict(trained), float(ctx.client.num_examples)), cstate


def _round(alg: Recorder, train: TrainConfig, precision: str = "") -> tuple[Upload, Payload]:
    setup = TinySetup(LoRASpec(alpha=4.0), [2])
    model = setup.model()
    if precision:
        place(model, "auto", precision)
    client = ClientInfo(0, 2, 20)
    payload = alg.download(
        alg.server_init(template(model), [client], setup.spec, 0), client, RoundInfo(1, 0)
    )
    up, _ = client_round(
        alg, model, tiny_data(20, 0), payload, {}, client, RoundInfo(1, 0), setup.spec, train
    )
    return up, payload


def test_hooks_run_in_order_once_per_step() -> None:
    alg = Recorder()
    _round(alg, TrainConfig(steps=3, batch_size=8))
    steps = [c for s in range(3) for c in (f"loss_term:{s}", f"grad_transform:{s}")]
    assert alg.calls == ["client_init", *steps, "upload"]


def test_the_optimizer_uses_what_grad_transform_returns() -> None:
    train = TrainConfig(steps=4, batch_size=8, optimizer="sgd", lr=0.1, head_lr=0.1)
    up, payload = _round(Recorder(grad_value=1.0), train)
    for k, start in payload.tensors.items():
        assert torch.allclose(up.tensors[k], start - 0.1 * 4, atol=1e-6), k


def test_loss_term_gradient_reaches_grad_transform() -> None:
    alg = Recorder(extra=1e6)
    _round(alg, TrainConfig(steps=1, batch_size=8))
    assert all((g > 1e5).all() for g in alg.seen[0].values())


def test_head_is_frozen_when_train_head_is_off() -> None:
    up, payload = _round(Recorder(), TrainConfig(steps=3, batch_size=8, train_head=False))
    assert torch.equal(up.tensors["classifier.weight"], payload.tensors["classifier.weight"])
    assert not torch.equal(up.tensors["fc1.lora_B"], payload.tensors["fc1.lora_B"])


def test_batches_cover_every_example_once_per_pass() -> None:
    it = batch_indices(10, 4, 0, 1, 2)
    first_pass = torch.cat([next(it) for _ in range(3)])
    assert sorted(first_pass.tolist()) == list(range(10))
    again = batch_indices(10, 4, 0, 1, 2)
    assert torch.equal(next(again), first_pass[:4])


def test_bf16_changes_the_compute_but_every_trained_tensor_stays_fp32() -> None:
    train = TrainConfig(steps=3, batch_size=8)
    plain, _ = _round(Recorder(), train)
    fp32, _ = _round(Recorder(), train, "fp32")
    alg = Recorder()
    bf16, payload = _round(alg, train, "bf16")
    assert all(torch.equal(plain.tensors[k], v) for k, v in fp32.tensors.items())  # no autocast
    assert all(v.dtype == torch.float32 for v in bf16.tensors.values())
    assert all(g.dtype == torch.float32 for grads in alg.seen for g in grads.values())
    assert any(not torch.equal(bf16.tensors[k], v) for k, v in fp32.tensors.items())
    moved = [k for k, v in bf16.tensors.items() if not torch.equal(v, payload.tensors[k])]
    assert moved  # it trained
