"""FedLoRU: FedAvg of low-rank factors, accumulated into the model every ``tau`` rounds.

Park, Klabjan, "Communication-Efficient Federated Low-Rank Update Algorithm and its Connection
to Implicit Regularization" (FedLoRU), arXiv 2409.12371 (ICLR 2025 submission, TMLR
resubmission).

One round, per adapted layer ``W0 (d_out, d_in)`` with the merged residual ``R (d_out, d_in)``
and the global factors ``B (d_out, r)``, ``A (r, d_in)`` at ``r = r_max``:

1. every sampled client receives ``(B, A)``, ``R`` and the head, trains ``(B_k, A_k)`` and the
   head on ``W0 + R + s B_k A_k`` (``W0`` and ``R`` frozen) and uploads them;
2. the server averages the factors separately, ``B ← Σ p_k B_k``, ``A ← Σ p_k A_k``, and the
   head (FedAvg, ``p_k ∝ n_k``);
3. when ``round % tau == 0`` it accumulates and restarts: ``R ← R + s B A``
   ``# (d_out, r) @ (r, d_in) -> (d_out, d_in)``, then ``A`` is a fresh standard init (seeded
   by round) and ``B = 0``, so the global model ``W0 + R + s B A`` is unchanged by the merge
   while its rank grows by up to ``r`` per merge ("federated ReLoRA").

Hooks: ``server_init`` the standard LoRA init at ``r_max`` (seed purpose ``lora-init``), zero
residuals and the head; ``download`` the factors cut to the client's rank, ``R`` and the head;
``client_init`` installs ``R`` under the trainable factors and head; default ``upload``;
``aggregate`` the averages, then the periodic merge; ``export`` factors, ``R`` and head.

Choices where the sources are silent or differ:

* Fine-tuning form: ``W0`` is the pretrained weight and round 1 starts from ``B = 0`` (the
  released code's from-scratch path, ``W0 = 0`` with both factors random, is for pre-training).
* Merge = merge and restart (paper, ``--accumulate_and_reinit``); the code's ``--accumulate``
  mode, which keeps the factors after adding them to ``W`` (counting them twice), is not used.
* ``tau`` defaults to 5 (the paper: 50 of 400 rounds); our runs are 8–20 rounds, so 5 gives one
  to three merges. ``tau = 0`` never merges (then the method is FedIT with a zero residual).
  The restart's A is drawn from ``generator(seed, "fedloru-restart", round, module)``.
* Download: clients are stateless (the code drops client models after each round), and a
  client that missed a merge needs the current ``W0 + R``; the paper does not budget this. We
  send the dense ``R`` every round (as FLoRA and FedEx-LoRA do here) rather than the list of
  merged factor pairs (``r·(d_out + d_in)`` per merge so far, which outgrows ``R`` after
  ``d_out·d_in / (r·(d_out + d_in))`` merges) or only to stale clients (needs client state).
* ``R`` is float32, updated in float64. ``agg_error`` is FedIT's pair error of the averaged
  factors against ``Σ p_k s_k B_k A_k`` (the inexact step); the merge itself is exact.

Heterogeneous ranks (our extension; the paper is homogeneous), as FedIT: the global factors
live at ``r_max``; a client of rank ``r_k`` receives the leading ``r_k`` rows of ``A`` and
columns of ``B`` and applies ``s(r_k)``; its upload is zero-padded back to ``r_max`` before
averaging; the global model and the merge apply ``s(r_max)``. With ``rescale_b`` (default) the
client's B is sent times ``s(r_max)/s(r_k)`` and mapped back on upload, so it starts from exactly
the global model's leading ``r_k`` components; ``rescale_b: false`` applies ``s(r_k)`` to the cut
factors as they are (a start ``s(r_k)/s(r_max)`` times the global part). See FedIT.

Bytes per client per round (float32), per adapted layer ``(d_out, d_in)`` at the client's rank
``r``: download ``4·(r·(d_out + d_in) + d_out·d_in)`` (B, A and the dense residual), upload
``4·r·(d_out + d_in)`` (B and A); plus ``4·n_head`` each way for the head's ``n_head`` floats.
"""

from __future__ import annotations

from dataclasses import dataclass

from ilora.algorithms import traffic
from ilora.algorithms._merging import MERGE_HELP
from ilora.algorithms._pair_servers import MergingServer
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register


@register("fedloru")
@dataclass(frozen=True)
class FedLoRU(MergingServer):
    """FedLoRU (see the module docstring; state: :class:`~._pair_servers.ResidualServer`'s)."""

    heterogeneous_ranks = True
    mean_aggregation = True  # the averages are Σ p_k lift(u_k), lift = zero-pad to r_max

    tau: int = hyperparameter(5, "ours", MERGE_HELP)

    def __post_init__(self) -> None:
        if self.tau < 0:
            raise ValueError(f"fedloru.tau must be >= 0 (0 = never merge), got {self.tau}")


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FedLoRU)(traffic.pair_and_residual_down)  # + the merged residual down
