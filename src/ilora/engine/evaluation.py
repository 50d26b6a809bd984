"""Evaluation: a loaded model (accuracy, mean cross-entropy) and the clients' own starts.

A client's view (:class:`ClientView`, :func:`client_view`) is its model at the start of the
next round (``client_init`` of its download and its state, untrained) on its own test share,
with that model's dense changes (``engine.diagnostics``, for ``download_error``). It runs in
process (:func:`embedded_views`) or in the Flower ``ClientApp`` (an ``evaluate`` message).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ilora.engine.compute import model_autocast
from ilora.engine.compute import model_device
from ilora.engine.diagnostics import dense_changes
from ilora.engine.local import make_context
from ilora.engine.shares import total_size
from ilora.engine.turn import canonical_payload
from ilora.lora.state import load_setup
from ilora.seeding import derive_seed
from ilora.seeding import generator
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict

if TYPE_CHECKING:
    from ilora.engine.setup import Experiment


def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int) -> dict[str, float]:
    """Return ``{"accuracy", "loss"}`` of ``model`` on ``data`` (eval and inference mode).

    The forward runs on the model's device in its compute precision (``engine.compute``); the
    loss is summed in fp32.
    """
    return _predict(model, data, batch_size)[0]


def evaluate_global(model: nn.Module, data: ArrayDataset, batch_size: int) -> dict[str, float]:
    """Return :func:`evaluate`'s metrics and ``top_prediction_share`` (the global model's).

    ``top_prediction_share`` is the share of ``data`` assigned to the class ``model`` predicts
    most: 1.0 when it calls every example the same class (``engine.guards``). Only the global
    model gets it: a client's own model on a one-class test share may rightly predict one class.
    """
    metrics, counts = _predict(model, data, batch_size)
    top = int(counts.max()) if counts.numel() else 0
    return {**metrics, "top_prediction_share": top / max(1, len(data))}


@torch.inference_mode()
def _predict(
    model: nn.Module, data: ArrayDataset, batch_size: int
) -> tuple[dict[str, float], torch.Tensor]:
    """Return the accuracy and loss of ``model`` on ``data`` and its predictions per class."""
    was_training = model.training
    model.eval()
    correct, loss_sum, device = 0, 0.0, model_device(model)
    counts = torch.zeros(0, dtype=torch.long)
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        with model_autocast(model):
            logits = model(**{k: v[idx].to(device) for k, v in data.inputs.items()}).float()
        labels = data.labels[idx].to(device)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        predicted = logits.argmax(dim=-1)
        correct += int((predicted == labels).sum())
        batch = torch.bincount(predicted.cpu(), minlength=logits.shape[-1])
        counts = batch if counts.numel() == 0 else counts + batch
    model.train(was_training)
    n = max(1, len(data))
    return {"accuracy": correct / n, "loss": loss_sum / n}, counts


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
) -> ClientView:
    """Return a client's view of round ``rnd`` from its (canonical) ``payload`` and state.

    No test share: no metrics (the dense changes are still measured).
    """
    alg, model, cfg = exp.algorithm, exp.model, exp.cfg
    ctx = make_context(model, payload, client, rnd, cfg.lora, cfg.train)
    load_setup(model, alg.client_init(ctx, cstate)[0])
    metrics = evaluate(model, test, cfg.eval.batch_size) if len(test) else {}
    return ClientView(client.cid, metrics, len(test), dense_changes(model))


@dataclass(frozen=True)
class ClientView:
    """One client's start of the next round: its metrics on its test share, its dense changes."""

    cid: int
    metrics: dict[str, float]
    examples: int
    changes: TensorDict


Views = Callable[[Any, RoundInfo, bool], list[ClientView]]


def eval_subset(test: ArrayDataset, size: int, seed: int) -> ArrayDataset:
    """Return the fixed seeded test subset used every round (all of it when ``size`` is 0)."""
    if size == 0 or size >= len(test):
        return test
    idx = torch.randperm(len(test), generator=generator(seed, "eval-subset"))[:size]
    return test.subset(idx.sort().values.numpy())


def personal_tests(exp: Experiment, full: bool) -> Sequence[ArrayDataset]:
    """Return the clients' test shares, or seeded subsets totalling about ``eval.subset``.

    Each client keeps ``round(subset · n_k / Σ n)`` (at least 1) of its ``n_k`` test examples,
    the same ones every round; ``full`` (the final evaluation) or ``eval.subset: 0`` keeps all.
    """
    tests, size = exp.local_tests, exp.cfg.eval.subset
    total = total_size(tests)  # without building every lazy share
    if full or size == 0 or size >= total:
        return tests
    return [
        eval_subset(t, max(1, round(size * len(t) / total)), derive_seed(exp.cfg.seed, cid))
        for cid, t in enumerate(tests)
    ]


def embedded_views(
    exp: Experiment, store: Mapping[int, TensorDict], cids: Sequence[int] | None = None
) -> Views:
    """Return the views of the clients ``cids`` (all: None) computed in this process.

    Client states come from ``store``. The pooled (centralized) reference has one model: the
    global one, on every client's share.
    """
    alg, model, cfg = exp.algorithm, exp.model, exp.cfg
    wanted = range(len(exp.clients)) if cids is None else cids

    def views(state: Any, rnd: RoundInfo, full: bool) -> list[ClientView]:
        out = []
        tests = personal_tests(exp, full)
        for client, test in ((exp.clients[c], tests[c]) for c in wanted):
            if alg.pooled_data:
                load_setup(model, alg.export(state))
                metrics = evaluate(model, test, cfg.eval.batch_size) if len(test) else {}
                out.append(ClientView(client.cid, metrics, len(test), dense_changes(model)))
                continue
            payload = canonical_payload(alg.download(state, client, rnd))
            out.append(client_view(exp, payload, store.get(client.cid, {}), client, rnd, test))
        return out

    return views
