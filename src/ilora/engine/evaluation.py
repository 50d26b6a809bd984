"""Evaluation of a loaded model on an ``ArrayDataset`` (accuracy and mean cross-entropy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ilora.engine.compute import model_autocast, model_device
from ilora.tasks.base import ArrayDataset


@torch.inference_mode()
def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int) -> dict[str, float]:
    """Return ``{"accuracy", "loss"}`` of ``model`` on ``data`` (eval and inference mode).

    The forward runs on the model's device in its compute precision (``engine.compute``); the
    loss is summed in fp32.
    """
    was_training = model.training
    model.eval()
    correct, loss_sum, device = 0, 0.0, model_device(model)
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        with model_autocast(model):
            logits = model(**{k: v[idx].to(device) for k, v in data.inputs.items()}).float()
        labels = data.labels[idx].to(device)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == labels).sum())
    model.train(was_training)
    n = max(1, len(data))
    return {"accuracy": correct / n, "loss": loss_sum / n}


def weighted_average(results: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Return the example-weighted mean of per-client metrics (``personal_`` prefixed)."""
    total = sum(n for _, n in results)
    if total == 0:
        return {}
    keys = results[0][0].keys()
    return {f"personal_{k}": sum(m[k] * n for m, n in results) / total for k in keys}
