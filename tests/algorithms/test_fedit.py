"""Golden math of FedIT: separate averaging of A and B, and its closed-form cross-term error."""

from __future__ import annotations

import numpy as np
import torch

from ilora.algorithms.base import create_algorithm
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo
from ilora.types import RoundInfo
from ilora.types import Upload

SPEC = LoRASpec(alpha=2.0, rank=2)


def _two_clients() -> tuple[object, dict[int, Upload], list[np.ndarray], list[np.ndarray]]:
    g = torch.Generator().manual_seed(1)
    clients = [ClientInfo(0, 2, 20), ClientInfo(1, 2, 60)]
    state = create_algorithm("fedit").server_init({"l.base": torch.zeros(3, 2)}, clients, SPEC, 0)
    As = [torch.randn(2, 2, generator=g) for _ in clients]  # (r, d_in)
    Bs = [torch.randn(3, 2, generator=g) for _ in clients]  # (d_out, r)
    uploads = {
        c.cid: Upload({"l.lora_A": As[c.cid], "l.lora_B": Bs[c.cid]}, float(c.num_examples))
        for c in clients
    }
    return state, uploads, [a.double().numpy() for a in As], [b.double().numpy() for b in Bs]


def test_factors_are_averaged_separately() -> None:
    state, uploads, As, Bs = _two_clients()
    new = create_algorithm("fedit").aggregate(state, uploads, RoundInfo(1, 0))
    assert np.allclose(
        new.tensors["l.lora_A"].numpy(), np.average(As, axis=0, weights=[20, 60]), atol=1e-6
    )
    assert np.allclose(
        new.tensors["l.lora_B"].numpy(), np.average(Bs, axis=0, weights=[20, 60]), atol=1e-6
    )


def test_cross_term_error_matches_the_closed_form() -> None:
    """Σ p_k B_k A_k − B̄Ā = p_1 p_2 (B_1 − B_2)(A_1 − A_2) for two clients."""
    state, uploads, As, Bs = _two_clients()
    new = create_algorithm("fedit").aggregate(state, uploads, RoundInfo(1, 0))
    p1, p2 = 0.25, 0.75
    ideal = p1 * Bs[0] @ As[0] + p2 * Bs[1] @ As[1]
    applied = new.tensors["l.lora_B"].double().numpy() @ new.tensors["l.lora_A"].double().numpy()
    assert np.allclose(ideal - applied, p1 * p2 * (Bs[0] - Bs[1]) @ (As[0] - As[1]), atol=1e-6)
    expected = np.linalg.norm(ideal - applied) / np.linalg.norm(ideal)
    assert abs(new.metrics["agg_error"] - expected) < 1e-6


def test_identical_a_makes_fedit_exact() -> None:
    state, uploads, _, _ = _two_clients()
    uploads[1] = Upload(
        {"l.lora_A": uploads[0].tensors["l.lora_A"], "l.lora_B": uploads[1].tensors["l.lora_B"]},
        60.0,
    )
    new = create_algorithm("fedit").aggregate(state, uploads, RoundInfo(1, 0))
    assert new.metrics["agg_error"] < 1e-6


def test_heterogeneous_ranks_zero_pad_and_truncate() -> None:
    clients = [ClientInfo(0, 1, 10), ClientInfo(1, 3, 10)]
    alg = create_algorithm("fedit")
    state = alg.server_init({"l.base": torch.zeros(4, 5)}, clients, SPEC, 0)
    assert state.tensors["l.lora_A"].shape == (3, 5)
    assert alg.download(state, clients[0], RoundInfo(1, 0)).tensors["l.lora_A"].shape == (1, 5)
    ups = {
        0: Upload({"l.lora_A": torch.ones(1, 5), "l.lora_B": torch.ones(4, 1)}, 10.0),
        1: Upload({"l.lora_A": 3 * torch.ones(3, 5), "l.lora_B": 3 * torch.ones(4, 3)}, 10.0),
    }
    new = alg.aggregate(state, ups, RoundInfo(1, 0))
    assert torch.allclose(new.tensors["l.lora_A"][0], torch.full((5,), 2.0))
    assert torch.allclose(
        new.tensors["l.lora_A"][1:], torch.full((2, 5), 1.5)
    )  # diluted by padding
