"""Independent reference computations shared by golden tests (numpy, written from the papers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ilora.types import ClientInfo, Payload, Upload


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
