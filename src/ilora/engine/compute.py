"""Where and in which precision the model computes: ``train.device`` and ``train.precision``.

``auto`` resolves against the hardware once per process: the device to ``cuda`` when a CUDA
device is visible, else ``cpu``; the precision to ``bf16`` where that device runs bf16 matmuls
natively (a CPU with AVX-512 BF16 or AMX, read from ``/proc/cpuinfo``; a CUDA device for which
``torch.cuda.is_bf16_supported()``), else ``fp32``.

Mixed precision is ``torch.autocast`` around the model's forward only (its backward replays the
recorded casts): matmuls and convolutions of the frozen base and of the adapters run in bf16,
while every parameter (LoRA factors, head), gradient, optimizer state and every ``TensorDict``
that leaves the local loop stays fp32. ``fp32`` runs with no autocast at all, so an fp32 run is
bitwise the run without this option. Under bf16 the frozen layers keep their bf16 weight copy
instead of autocast recasting it at every call (``engine.castcache``: bitwise the same result).

Every ``TensorDict`` outside the model lives on the CPU: what the server sends, aggregates and
stores, the clients' state, what ``client_init`` and ``upload`` see and return
(``lora.state`` moves tensors across the model's boundary). Only the hooks that run inside the
training loop (``loss_term``, ``grad_transform``) get their context and client state on the
model's device (:func:`context_to`), since they combine it with the live parameters.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch

from ilora.engine import castcache
from ilora.types import ClientContext
from ilora.types import TensorDict

Precision = Literal["fp32", "bf16"]
Device = Literal["cpu", "cuda"]

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """Return the CPU feature flags the kernel reports (empty where there is no cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def native_bf16(device: Device) -> bool:
    """Return True if ``device`` has native bf16 matmuls (see the module docstring)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)


def resolve_device(name: str) -> Device:
    """Return the device ``train.device`` names (``auto``: cuda if visible, else cpu).

    Raises:
        ValueError: for ``cuda`` on a machine where torch sees no CUDA device.

    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is cuda but torch sees no CUDA device; use cpu or auto")
    return "cuda" if name == "cuda" else "cpu"


def resolve_precision(name: str, device: Device) -> Precision:
    """Return the precision ``train.precision`` names on ``device`` (``auto``: bf16 if native)."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if name == "bf16" else "fp32"


def model_device(model: torch.nn.Module) -> torch.device:
    """Return the device of the model's first parameter (cpu for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """Run the block in ``precision`` on ``device``: bf16 autocast, or nothing for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield


def resolve(device: str, precision: str) -> tuple[Device, Precision]:
    """Return the resolved ``(device, precision)`` of ``train.device`` and ``train.precision``."""
    dev = resolve_device(device)
    return dev, resolve_precision(precision, dev)


def place(model: torch.nn.Module, device: str, precision: str, cast_cache: bool = True) -> None:
    """Move ``model`` to the resolved device and record its resolved compute precision.

    Under bf16 the frozen layers get the cast cache (``engine.castcache``) unless
    ``cast_cache`` is False (autocast recasting every call: the benchmark's reference).
    """
    dev, prec = resolve(device, precision)
    model.to(dev)
    model.ilora_precision = prec  # type: ignore[assignment]
    if prec == "bf16" and cast_cache:
        castcache.enable(model)
    else:
        castcache.disable(model)


def model_precision(model: torch.nn.Module) -> Precision:
    """Return the precision :func:`place` recorded on ``model`` (fp32 if never placed)."""
    prec: Precision = getattr(model, "ilora_precision", "fp32")
    return prec


def model_autocast(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """Return the autocast context of the model's device and recorded precision."""
    return autocast(model_device(model), model_precision(model))


def tensors_to(tensors: Mapping[str, torch.Tensor], device: torch.device) -> TensorDict:
    """Return ``tensors`` on ``device`` (the same tensor objects where already there)."""
    return {k: v.to(device) for k, v in tensors.items()}


def context_to(ctx: ClientContext, device: torch.device) -> ClientContext:
    """Return ``ctx`` with every tensor it carries on ``device`` (itself on the CPU)."""
    if device.type == "cpu":
        return ctx
    feats = ctx.features
    return replace(
        ctx,
        payload=replace(ctx.payload, tensors=tensors_to(ctx.payload.tensors, device)),
        base=tensors_to(ctx.base, device),
        start_grad=None if ctx.start_grad is None else tensors_to(ctx.start_grad, device),
        features=None
        if feats is None
        else replace(feats, inputs=feats.inputs.to(device), labels=feats.labels.to(device)),
        trained=None if ctx.trained is None else tensors_to(ctx.trained, device),
    )
