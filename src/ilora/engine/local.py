"""The one local training loop: the only caller of the client hooks.

``client_round`` builds the client context, lets the algorithm choose the starting point
(``client_init``), installs it, optionally measures the mean gradient at that point
(``start_gradient_batches``), trains for ``train.steps`` minibatch steps with ``loss_term`` and
``grad_transform`` applied, and hands the trained tensors to ``upload``. Randomness (batch order,
dropout) is a function of (seed, round, client) only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ilora.algorithms.base import Algorithm
from ilora.config import TrainConfig
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.lora.state import base_weights, factor_state, load_setup
from ilora.seeding import generator, local_rng
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientContext, ClientInfo, Payload, RoundInfo, TensorDict, Upload


def batch_indices(n: int, batch_size: int, *seed: object) -> Iterator[torch.Tensor]:
    """Yield minibatch indices forever: a fresh seeded shuffle per pass over ``n`` examples."""
    epoch = 0
    while True:
        order = torch.randperm(n, generator=generator(*seed, "epoch", epoch))
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]
        epoch += 1


def classification_loss(model: nn.Module, data: ArrayDataset, idx: torch.Tensor) -> torch.Tensor:
    """Return the mean cross-entropy of ``model`` on the examples ``idx`` of ``data``."""
    logits = model(**{k: v[idx] for k, v in data.inputs.items()})  # (b, C)
    return F.cross_entropy(logits, data.labels[idx])


def make_optimizer(params: dict[str, nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
    """Return a fresh AdamW or SGD: LoRA tensors at ``lr``, the head at ``head_lr``."""
    factors = [p for k, p in params.items() if not keys.is_param(k)]
    head = [p for k, p in params.items() if keys.is_param(k)]
    groups = [
        g
        for g in ({"params": factors, "lr": train.lr}, {"params": head, "lr": train.head_lr})
        if g["params"]
    ]
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    return torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)


def mean_gradient(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    data: ArrayDataset,
    batch_size: int,
    num_batches: int,
    *seed: object,
) -> TensorDict:
    """Return the mean over examples of the loss gradient at the current point (eval mode).

    ``num_batches = 0`` means one pass over all of ``data``; otherwise that many seeded batches.
    """
    was_training = model.training
    model.eval()
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    count, batches = 0, batch_indices(len(data), batch_size, *seed, "start-grad")
    limit = -(-len(data) // batch_size) if num_batches == 0 else num_batches
    for _, idx in zip(range(limit), batches, strict=False):
        grads = torch.autograd.grad(
            classification_loss(model, data, idx), list(params.values()), allow_unused=True
        )
        for k, g in zip(params, grads, strict=True):
            if g is not None:
                total[k] += g * len(idx)  # batch mean -> example sum
        count += len(idx)
    model.train(was_training)
    return {k: (v / max(1, count)).detach() for k, v in total.items()}


def make_context(
    model: nn.Module,
    payload: Payload,
    client: ClientInfo,
    rnd: RoundInfo,
    lora: LoRASpec,
    train: TrainConfig,
) -> ClientContext:
    """Return the context the client hooks read (the model's frozen weights included)."""
    return ClientContext(client, rnd, payload, lora, train, base=base_weights(model))


def client_round(
    alg: Algorithm,  # type: ignore[type-arg]
    model: nn.Module,
    data: ArrayDataset,
    payload: Payload,
    cstate: TensorDict,
    client: ClientInfo,
    rnd: RoundInfo,
    lora: LoRASpec,
    train: TrainConfig,
) -> tuple[Upload, TensorDict]:
    """Run one client's local round and return its upload and new state (see module docstring)."""
    ctx = make_context(model, payload, client, rnd, lora, train)
    setup, cstate = alg.client_init(ctx, cstate)
    params = load_setup(model, setup)
    if not train.train_head:
        for k in [k for k in params if keys.is_param(k)]:
            params.pop(k).requires_grad_(False)
    seed = (rnd.seed, rnd.round, client.cid)
    if (n := alg.start_gradient_batches()) is not None:
        ctx = replace(
            ctx, start_grad=mean_gradient(model, params, data, train.batch_size, n, *seed)
        )
    opt = make_optimizer(params, train)
    model.train()
    losses = []
    with local_rng(*seed):
        batches = batch_indices(len(data), train.batch_size, *seed)
        for step, idx in zip(range(train.steps), batches, strict=False):
            ctx = replace(ctx, step=step)
            loss = classification_loss(model, data, idx)
            losses.append(float(loss.detach()))
            if (extra := alg.loss_term(dict(params), ctx, cstate)) is not None:
                loss = loss + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            _apply_grads(alg, params, ctx, cstate, train)
            opt.step()
    up, cstate = alg.upload(factor_state(model), ctx, cstate)
    metrics = {**up.metrics, "train_loss": sum(losses) / max(1, len(losses))}
    return replace(up, metrics=metrics), cstate


def _apply_grads(
    alg: Algorithm,  # type: ignore[type-arg]
    params: dict[str, nn.Parameter],
    ctx: ClientContext,
    cstate: TensorDict,
    train: TrainConfig,
) -> None:
    grads = {k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in params.items()}
    new = alg.grad_transform(grads, dict(params), ctx, cstate)
    for k, g in new.items():
        params[k].grad = g
    if train.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(params.values()), train.max_grad_norm)
