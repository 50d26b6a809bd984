"""Evaluation of a loaded model (accuracy, mean cross-entropy) and of a client's own start.

:func:`client_view` runs in process (embedded engine) or in the Flower ``ClientApp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ilora.engine.compute import model_autocast, model_device
from ilora.engine.diagnostics import dense_changes
from ilora.engine.local import make_context
from ilora.lora.state import load_setup
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientInfo, Payload, RoundInfo, TensorDict

if TYPE_CHECKING:
    from ilora.engine.setup import Experiment


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


def client_view(
    exp: Experiment,
    payload: Payload,
    cstate: TensorDict,
    client: ClientInfo,
    rnd: RoundInfo,
    test: ArrayDataset,
) -> tuple[dict[str, float], int, TensorDict]:
    """Return a client's own model on its test share, the share's size and the dense changes.

    The client's model is what it starts round ``rnd`` from: ``client_init`` of its (canonical)
    ``payload`` and its state, without training (DESIGN §8). No test share: no metrics.
    """
    alg, model, cfg = exp.algorithm, exp.model, exp.cfg
    ctx = make_context(model, payload, client, rnd, cfg.lora, cfg.train)
    load_setup(model, alg.client_init(ctx, cstate)[0])
    metrics = evaluate(model, test, cfg.eval.batch_size) if len(test) else {}
    return metrics, len(test), dense_changes(model)
