"""Independent reference computations shared by golden tests (numpy, written from the papers)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

# Student t quantiles t(0.975, df) (scipy.stats.t.ppf), for the reports' 95% intervals
T_975 = {2: 4.302652729911275, 3: 3.182446305284263}


def top_m_gate(logits: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(kept, w)``: the ``m`` largest of ``softmax(logits)`` (stable order), renormalised.

    FedLEASE's router per token: ``p = softmax(G x)``, keep the top ``m`` outputs, ``w = p / Σ p``
    over them.
    """
    p = np.exp(logits - logits.max())
    p /= p.sum()
    kept = np.argsort(-p, kind="stable")[:m]
    return kept, p[kept] / p[kept].sum()


def moved_pairs(
    pay: Payload, g: torch.Generator, weights: Sequence[float], clients: Sequence[ClientInfo]
) -> dict[int, Upload]:
    """Clients move the received rank-2 ``(B, A)`` of layer ``l`` and draw a new 2x2 head.

    A seeded stand-in for local training on a ``(3, 2)`` layer: ``A + N(0, 1)``,
    ``B + N(0, 1)``, head ``N(0, 1)``, uploaded with weight ``weights[cid]``.
    """
    return {
        c.cid: Upload(
            {
                "l.lora_A": pay.tensors["l.lora_A"] + torch.randn(2, 2, generator=g),  # (r, d_in)
                "l.lora_B": pay.tensors["l.lora_B"] + torch.randn(3, 2, generator=g),  # (d_out, r)
                "head.weight": torch.randn(2, 2, generator=g),
            },
            weights[c.cid],
        )
        for c in clients
    }


def one_pair_round(
    alg: Any, template: TensorDict, clients: Sequence[ClientInfo], spec: LoRASpec
) -> tuple[Any, dict[int, Upload], np.ndarray, np.ndarray]:
    """Run one round of :func:`moved_pairs` (weights 20, 60) from the server's first state.

    Returns the new state, the uploads and the reference weighted means ``Ā``, ``B̄`` (float64).
    """
    state = alg.server_init(template, clients, spec, 0)
    pay = alg.download(state, clients[0], RoundInfo(1, 0))
    ups = moved_pairs(pay, torch.Generator(), [20, 60], clients)
    new = alg.aggregate(state, ups, RoundInfo(1, 0))
    mean = {
        k: np.average([ups[c.cid].tensors[k].double().numpy() for c in clients], 0, [20, 60])
        for k in ("l.lora_A", "l.lora_B")
    }
    return new, ups, mean["l.lora_A"], mean["l.lora_B"]


def paired_interval(diffs: Sequence[float]) -> str:
    """Return ``"+m ± h"`` as the reports print it: the mean of paired ``diffs``, 2 decimals.

    ``h = t(0.975, n - 1) s / sqrt(n)``, the half-width of its 95% interval (``n`` 3 or 4).
    """
    n = len(diffs)
    half = T_975[n - 1] * statistics.stdev(diffs) / n**0.5
    return f"{statistics.fmean(diffs):+.2f} ± {half:.2f}"
