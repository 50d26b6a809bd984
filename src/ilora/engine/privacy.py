"""Client-level differential privacy: clipped, noised updates and an RDP accountant.

Config section ``dp`` (on when ``dp.clip_norm`` C > 0). The mechanism is DP-FedAvg's
(McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018, arXiv 1710.06963), in each algorithm's native upload shapes:

1. clip: a client's update ``Δ = u − sent`` (every floating tensor of its upload minus what it
   was sent under that key and shape; a key it was not sent counts whole, as for
   ``fed.max_update_norm``) is scaled to norm at most C over all tensors together
   (``validation.clip_update``);
2. noise: every floating entry of the clipped upload gets independent Gaussian noise, drawn on
   the client from the operating system's CSPRNG (``os.urandom``, Box-Muller in float64), never
   from the config seed or anything the server sends: whoever holds ``config.yaml`` (the server,
   on Flower every client) cannot regenerate and subtract it. ``dp.reproducible_noise: true``
   (for tests only; a warning, and ``manifest.json`` records it) draws it from
   ``generator(seed, "dp-noise", round, cid)`` instead, which protects nothing;

   * ``dp.noise: upload`` (default, any algorithm): std ``σ·C``. Each upload is by itself a
     Gaussian mechanism on its client's data, so whatever the server computes from the uploads
     (ILoRA's concatenated QR, SVDs, clustering) is covered by post-processing;
   * ``dp.noise: aggregate``: std ``σ·C/√m`` with ``m`` the clients sampled per round, so the
     sum of the ``m`` uploads carries ``N(0, σ²C²)``: central DP-FedAvg's noise, split over the
     clients (distributed DP). It covers only an aggregate that is a function of the uniformly
     weighted mean of same-shaped uploads (``Algorithm.mean_aggregation`` with one rank and
     ``fed.weighting: uniform``), assumes the server sees only the sum (secure aggregation, or a
     trusted server) and that all ``m`` sampled clients deliver: with ``m' < m`` arrivals the
     sum carries ``σ·√(m'/m)``. Validation refuses it elsewhere.

Accounting (``epsilon``): the released global models are ``(ε, δ)``-DP with respect to
replacing one client's whole data set. Our sampling is a fixed-size sample of ``m`` of the ``n``
clients without replacement (``engine.sampling``), so each round is
``SampledWithoutReplacementDpEvent(n, m, GaussianDpEvent(σ/2))`` under the ``REPLACE_ONE``
relation (Wang, Balle, Kasiviswanathan, AISTATS 2019, Thm 27): replacing a client moves its
clipped update, hence the sum, by at most ``2C`` while the noise is ``σC``, a noise multiplier of
``σ/2``. ``fed.rounds`` such rounds are composed by ``dp_accounting.rdp.RdpAccountant`` and
converted to ε at ``dp.delta``. Subsampling never weakens a guarantee, so ε is the smaller of
that bound and full participation's (``GaussianDpEvent(σ/2)`` every round), which is tighter at
small σ, where the sampled bound is loose. The DP-FedAvg literature often reports the
add/remove-one relation with Poisson sampling at ``q = m/n`` and multiplier σ
(``sampling="poisson"``): an approximation for our sampler, with a smaller ε.
Every round is charged (a lost or rejected upload releases less, never more). Against the
server, which knows whom it sampled, ``upload`` noise still makes each upload a Gaussian
mechanism of multiplier σ/2, composed over the rounds a client took part in (no amplification
by sampling). The upload weights must be uniform (example counts are private), and
``train_loss`` in ``history.jsonl`` (the clients' own reported losses) is not covered.

Secrecy of sampling: amplification by subsampling assumes the party the guarantee is stated
against does not know which clients a round sampled. A DP run with noise therefore samples from a
secret seed (:func:`ilora.engine.sampling.sampling_seed`: OS entropy, kept in the server's
checkpoint, never in ``config.yaml`` nor sent to a client); with ``dp.reproducible_noise`` it
samples from the config seed, like a run without DP.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

from ilora.algorithms.base import Algorithm
from ilora.config import ConfigError
from ilora.config import DPConfig
from ilora.config import ExperimentConfig
from ilora.engine.sampling import num_sampled
from ilora.engine.validation import clip_update
from ilora.seeding import generator
from ilora.types import TensorDict

if TYPE_CHECKING:
    import torch

Sampling = Literal["without_replacement", "poisson"]


def noise_std(dp: DPConfig, sampled: int) -> float:
    """Return the std of the noise on each entry of one upload (see the module docstring)."""
    total = dp.noise_multiplier * dp.clip_norm
    return total / math.sqrt(sampled) if dp.noise == "aggregate" else total


class ReproducibleNoiseWarning(UserWarning):
    """``dp.reproducible_noise`` is on: the DP noise can be regenerated from the config."""


def noise_source(dp: DPConfig) -> str:
    """Return where the run's DP noise comes from (recorded in ``manifest.json``)."""
    if dp.reproducible_noise:
        return "config seed (dp.reproducible_noise: tests only, no privacy)"
    return "os.urandom (client side)"


def secure_normal(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Return standard normal float64 samples of ``shape`` from ``os.urandom`` (Box-Muller).

    Each pair of 53-bit uniforms ``u1 ∈ (0, 1]``, ``u2 ∈ [0, 1)`` gives ``√(−2 ln u1)·cos(2πu2)``
    and ``√(−2 ln u1)·sin(2πu2)``.
    """
    import torch

    n = math.prod(shape)
    pairs = (n + 1) // 2
    raw = torch.frombuffer(bytearray(os.urandom(16 * pairs)), dtype=torch.int64)
    u = ((raw >> 11) & ((1 << 53) - 1)).to(torch.float64) * 2.0**-53  # [0, 1)
    u1, u2 = 1.0 - u[:pairs], u[pairs:]
    radius, angle = torch.sqrt(-2.0 * torch.log(u1)), 2.0 * math.pi * u2
    z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])
    return z[:n].reshape(shape)


def privatize(
    upload: Mapping[str, torch.Tensor],
    sent: Mapping[str, torch.Tensor],
    dp: DPConfig,
    sampled: int,
    *seed: object,
) -> TensorDict:
    """Return ``upload`` with its update clipped to ``dp.clip_norm`` and Gaussian noise added.

    The noise of each floating tensor (sorted keys) is float64 from :func:`secure_normal`, or
    from ``generator(*seed)`` under ``dp.reproducible_noise``; other tensors pass unchanged.
    """
    import torch

    clipped = clip_update(upload, sent, dp.clip_norm)
    std = noise_std(dp, sampled)
    if std == 0.0:
        return clipped
    g = generator(*seed) if dp.reproducible_noise else None
    out: TensorDict = {}
    for key in sorted(clipped):
        t = clipped[key]
        if not t.is_floating_point():
            out[key] = t
            continue
        if g is None:
            noise = secure_normal(t.shape) * std
        else:
            noise = torch.randn(t.shape, generator=g, dtype=torch.float64) * std
        out[key] = (t.to(torch.float64) + noise).to(t.dtype)
    return out


def epsilon(
    noise_multiplier: float,
    num_clients: int,
    sampled: int,
    rounds: int,
    delta: float,
    sampling: Sampling = "without_replacement",
) -> float:
    """Return ε at ``delta`` after ``rounds`` rounds of ``sampled`` of ``num_clients`` clients.

    ``without_replacement``: our sampler, replace-one relation, multiplier ``σ/2``;
    ``poisson``: add/remove-one, Poisson sampling at ``q = sampled/num_clients``, multiplier σ.
    ``inf`` for ``noise_multiplier = 0``.
    """
    if noise_multiplier <= 0:
        return math.inf
    from dp_accounting import dp_event  # the `dp` extra; imported only to account

    if sampling == "poisson":
        q = sampled / num_clients
        gauss = dp_event.GaussianDpEvent(noise_multiplier)
        return _epsilon(dp_event.PoissonSampledDpEvent(q, gauss), rounds, delta, replace_one=False)
    gauss = dp_event.GaussianDpEvent(noise_multiplier / 2)
    subsampled = dp_event.SampledWithoutReplacementDpEvent(num_clients, sampled, gauss)
    return min(  # at low σ the sampled bound is looser than full participation, also valid
        _epsilon(subsampled, rounds, delta, replace_one=True),
        _epsilon(gauss, rounds, delta, replace_one=True),
    )


def _epsilon(event: Any, rounds: int, delta: float, replace_one: bool) -> float:
    """Return ε at ``delta`` of ``event`` composed ``rounds`` times (RDP accountant)."""
    from dp_accounting.privacy_accountant import NeighboringRelation
    from dp_accounting.rdp import RdpAccountant

    relation = (
        NeighboringRelation.REPLACE_ONE if replace_one else NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    accountant = RdpAccountant(neighboring_relation=relation)
    absl = logging.getLogger("absl")  # orders where a series does not converge are skipped
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        accountant.compose(event, rounds)
        return float(accountant.get_epsilon(delta))
    finally:
        absl.setLevel(level)


def run_epsilon(cfg: ExperimentConfig, rounds: int) -> float:
    """Return the run's ε after ``rounds`` rounds (its config's sampling and noise)."""
    n = cfg.data.num_clients
    m = num_sampled(n, cfg.fed.fraction)
    return epsilon(cfg.dp.noise_multiplier, n, m, rounds, cfg.dp.delta)


def privacy_metrics(cfg: ExperimentConfig, rounds: int) -> dict[str, float]:
    """Return ``{"epsilon": ε}`` after ``rounds`` rounds for ``history.jsonl`` (empty when off).

    Only with noise (``dp.noise_multiplier > 0``): clipping alone gives no guarantee.
    """
    if not cfg.dp.enabled or cfg.dp.noise_multiplier == 0:
        return {}
    return {"epsilon": run_epsilon(cfg, rounds)}


def check_dp(cfg: ExperimentConfig, alg: Algorithm[Any], ranks: list[int]) -> None:
    """Refuse DP settings the analysis does not cover (module docstring).

    Raises:
        ConfigError: naming the setting and the fix.

    """
    dp = cfg.dp
    if not dp.enabled:
        return
    if dp.reproducible_noise and dp.noise_multiplier > 0:
        warnings.warn(
            "dp.reproducible_noise is on: the DP noise and the client sampling derive from the "
            "config seed, so anyone holding config.yaml can remove the noise; the reported "
            "epsilon protects nothing (meant for tests only)",
            ReproducibleNoiseWarning,
            stacklevel=2,
        )
    if dp.noise_multiplier > 0 and importlib.util.find_spec("dp_accounting") is None:
        raise ConfigError(
            "dp.noise_multiplier > 0 needs the privacy accountant: pip install 'ilora[dp]' "
            "(dp-accounting)"
        )
    if alg.pooled_data:
        raise ConfigError(
            f"dp: algorithm {cfg.algorithm!r} pools every example in one client; client-level "
            "privacy needs federated clients"
        )
    if cfg.fed.weighting != "uniform":
        raise ConfigError(
            "dp needs fed.weighting: uniform (an example-count weight is the client's private "
            "data, and the noise analysis assumes equal weights)"
        )
    if dp.noise == "aggregate" and not (alg.mean_aggregation and len(set(ranks)) == 1):
        raise ConfigError(
            f"dp.noise: aggregate covers a uniformly weighted mean of same-shaped uploads; "
            f"algorithm {cfg.algorithm!r} with ranks {sorted(set(ranks))} does not aggregate "
            "one (it needs a mean-aggregation algorithm and one rank). Use dp.noise: upload"
        )
