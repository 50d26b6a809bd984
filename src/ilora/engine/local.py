"""The one local training loop: the only caller of the client hooks.

``client_round`` builds the client context, lets the algorithm choose the starting point
(``client_init``; before it, optionally the frozen backbone's head inputs of the local data,
``backbone_feature_batches``), installs it, optionally measures the mean gradient at that point
(``start_gradient_batches``), trains for ``train.steps`` minibatch steps with ``loss_term`` and
``grad_transform`` applied (a setup with ``steps`` covers only a phase: then ``client_init`` is
asked for the next setup, with ``ctx.trained``), and hands the trained tensors to ``upload``.
Randomness (batch order, dropout) is a function of (seed, round, client) only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ilora.algorithms.base import Algorithm
from ilora.config import TrainConfig
from ilora.engine.compute import context_to
from ilora.engine.compute import model_autocast
from ilora.engine.compute import model_device
from ilora.engine.compute import tensors_to
from ilora.engine.diagnostics import change_since
from ilora.engine.diagnostics import dense_changes
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.lora.state import base_weights
from ilora.lora.state import factor_state
from ilora.lora.state import head_names
from ilora.lora.state import load_setup
from ilora.seeding import generator
from ilora.seeding import local_rng
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import Features
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload


def batch_indices(n: int, batch_size: int, *seed: object) -> Iterator[torch.Tensor]:
    """Yield minibatch indices forever: a fresh seeded shuffle per pass over ``n`` examples."""
    epoch = 0
    while True:
        order = torch.randperm(n, generator=generator(*seed, "epoch", epoch))
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]
        epoch += 1


def classification_loss(model: nn.Module, data: ArrayDataset, idx: torch.Tensor) -> torch.Tensor:
    """Return the mean cross-entropy (fp32) of ``model`` on the examples ``idx`` of ``data``.

    The batch goes to the model's device; the forward runs in the model's compute precision
    (``engine.compute``: bf16 autocast or plain fp32), the loss in fp32.
    """
    device = model_device(model)
    with model_autocast(model):
        logits = model(**{k: v[idx].to(device) for k, v in data.inputs.items()})  # (b, C)
    return F.cross_entropy(logits.float(), data.labels[idx].to(device))


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
    return {k: (v / max(1, count)).detach().cpu() for k, v in total.items()}


def head_module(model: nn.Module) -> nn.Module:
    """Return the module that holds the first head parameter (its input: the features).

    Raises:
        ValueError: if the model records no head.

    """
    names = head_names(model)
    if not names:
        raise ValueError("backbone features need a head: the model records no head parameters")
    return model.get_submodule(names[0].rpartition(".")[0])


@torch.no_grad()
def backbone_features(
    model: nn.Module, data: ArrayDataset, batch_size: int, num_batches: int, *seed: object
) -> Features:
    """Return the head inputs of the frozen backbone (adapters and residuals removed).

    ``num_batches = 0`` means one pass over all of ``data`` in order; otherwise that many seeded
    batches. Eval mode (no dropout). The adapters are left removed: the caller installs its setup.
    """
    load_setup(model, LocalSetup(factors={}))
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].detach().flatten(1).float().cpu())  # (b, d)

    handle = head_module(model).register_forward_pre_hook(grab)
    was_training = model.training
    model.eval()
    labels, width = [], 0
    try:
        if num_batches == 0:
            n = len(data)
            batches: Iterator[torch.Tensor] = (
                torch.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)
            )
        else:
            shuffled = batch_indices(len(data), batch_size, *seed, "features")
            batches = (idx for _, idx in zip(range(num_batches), shuffled, strict=False))
        device = model_device(model)
        for idx in batches:
            with model_autocast(model):
                out = model(**{k: v[idx].to(device) for k, v in data.inputs.items()})
            width = int(out.shape[-1])
            labels.append(data.labels[idx])
    finally:
        handle.remove()
        model.train(was_training)
    return Features(torch.cat(captured), torch.cat(labels), width)


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
    seed = (rnd.seed, rnd.round, client.cid)
    if (nf := alg.backbone_feature_batches(ctx, cstate)) is not None:
        ctx = replace(ctx, features=backbone_features(model, data, train.batch_size, nf, *seed))
    setup, cstate = alg.client_init(ctx, cstate)
    params = _install(model, setup, train)
    start = dense_changes(model)  # for the client's ΔW_k (agg_error), engine.diagnostics
    if (n := alg.start_gradient_batches()) is not None:
        ctx = replace(
            ctx, start_grad=mean_gradient(model, params, data, train.batch_size, n, *seed)
        )
    opt = make_optimizer(params, train)
    end, device = _phase_end(setup, 0, train), model_device(model)
    # the hooks inside the loop see the context and state on the model's device (CPU: as is)
    live, dev_ctx = tensors_to(cstate, device), context_to(ctx, device)
    model.train()
    losses = []
    with local_rng(*seed):
        batches = batch_indices(len(data), train.batch_size, *seed)
        for step, idx in zip(range(train.steps), batches, strict=False):
            if step == end:  # the setup's phase is over: the algorithm chooses the next one
                ctx = replace(ctx, step=step, trained=factor_state(model))
                setup, cstate = alg.client_init(ctx, cstate)
                params, live = _install(model, setup, train), tensors_to(cstate, device)
                dev_ctx = context_to(ctx, device)
                opt, end = make_optimizer(params, train), _phase_end(setup, step, train)
            ctx = replace(ctx, step=step)
            hook_ctx = replace(dev_ctx, step=step)
            losses.append(_train_step(alg, model, (data, idx), params, hook_ctx, live, opt, train))
    up, cstate = alg.upload(factor_state(model), ctx, cstate)
    metrics = {**up.metrics, "train_loss": sum(losses) / max(1, len(losses))}
    if losses:  # the loss at the client's start: the divergence guard's reference
        metrics["start_loss"] = losses[0]
    return replace(up, metrics=metrics, diagnostics=change_since(model, start)), cstate


def _train_step(
    alg: Algorithm,  # type: ignore[type-arg]
    model: nn.Module,
    batch: tuple[ArrayDataset, torch.Tensor],
    params: dict[str, nn.Parameter],
    ctx: ClientContext,
    cstate: TensorDict,
    opt: torch.optim.Optimizer,
    train: TrainConfig,
) -> float:
    """Take one optimizer step on ``batch`` (the data and the indices of its examples).

    Returns the batch's classification loss before the step (without the algorithm's term).
    """
    loss = classification_loss(model, *batch)
    value = float(loss.detach())
    if (extra := alg.loss_term(dict(params), ctx, cstate)) is not None:
        loss = loss + extra
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    _apply_grads(alg, params, ctx, cstate, train)
    opt.step()
    return value


def _install(model: nn.Module, setup: LocalSetup, train: TrainConfig) -> dict[str, nn.Parameter]:
    """Load ``setup`` and return the parameters to train (the head only if ``train_head``)."""
    params = load_setup(model, setup)
    if not train.train_head:
        for k in [k for k in params if keys.is_param(k)]:
            params.pop(k).requires_grad_(False)
    return params


def _phase_end(setup: LocalSetup, start: int, train: TrainConfig) -> int:
    """Return the step at which a setup installed at step ``start`` stops (``LocalSetup.steps``).

    Raises:
        ValueError: if ``setup.steps`` is given and below 1.

    """
    if setup.steps is None:
        return train.steps
    if setup.steps < 1:
        raise ValueError(f"LocalSetup.steps must be >= 1 or None, got {setup.steps}")
    return min(train.steps, start + setup.steps)


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
