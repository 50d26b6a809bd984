"""Client-level DP: clipping in native shapes, the measured noise, and the RDP accountant."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ilora import config
from ilora.engine.privacy import epsilon
from ilora.engine.setup import build
from ilora.engine.setup import validate
from ilora.engine.simulation import run
from ilora.engine.turn import canonical_payload
from ilora.engine.turn import client_work
from ilora.engine.validation import update_norm
from ilora.lora.state import template
from ilora.types import RoundInfo
from ilora.types import TensorDict

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
DELTA = 1e-5


def _rdp_gaussian_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """ε from the closed-form Gaussian RDP ``T·α/(2σ²)``, converted on a fine grid of orders.

    Conversion (Balle et al. 2020, Prop. 12; Canonne et al. 2020): ``ε = rdp(α) + log(1 − 1/α)
    − log(δ·α)/(α − 1)``, minimised over α.
    """
    alphas = np.concatenate([np.linspace(1.02, 12, 20_000), np.linspace(12, 2000, 20_000)])
    rdp = rounds * alphas / (2 * sigma**2)
    eps = rdp + np.log1p(-1 / alphas) - np.log(delta * alphas) / (alphas - 1)
    return float(eps.min())


def _exact_gaussian_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """The exact ε of ``rounds`` Gaussians of multiplier σ (= one of σ/√T; Balle & Wang 2018)."""
    s = sigma / math.sqrt(rounds)

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    def delta_of(eps: float) -> float:
        return phi(-eps * s + 1 / (2 * s)) - math.exp(eps) * phi(-eps * s - 1 / (2 * s))

    lo, hi = 0.0, 1000.0
    for _ in range(200):  # δ(ε) decreases in ε
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("rounds", [1, 8, 20])
def test_full_participation_epsilon_is_the_closed_form_gaussian_rdp(
    sigma: float, rounds: int
) -> None:
    """Every client every round: each round is a Gaussian of multiplier σ/2 (replace-one)."""
    got = epsilon(sigma, num_clients=10, sampled=10, rounds=rounds, delta=DELTA)
    closed = _rdp_gaussian_epsilon(sigma / 2, rounds, DELTA)
    assert closed <= got * (1 + 1e-9)  # the accountant minimises over fewer orders
    assert got <= closed * 1.01
    exact = _exact_gaussian_epsilon(sigma / 2, rounds, DELTA)
    assert exact <= got <= 1.6 * exact  # an upper bound, and not a loose one


def test_sampling_composition_and_noise_move_epsilon_the_right_way() -> None:
    full = epsilon(1.0, 10, 10, 8, DELTA)
    half = epsilon(1.0, 10, 5, 8, DELTA)
    tenth = epsilon(1.0, 100, 10, 8, DELTA)
    assert tenth < half < full
    assert epsilon(1.0, 10, 5, 16, DELTA) > half
    assert epsilon(2.0, 10, 5, 8, DELTA) < half
    assert epsilon(1.0, 10, 5, 8, 1e-3) < half
    poisson = epsilon(1.0, 10, 5, 8, DELTA, sampling="poisson")  # add/remove, multiplier σ
    assert poisson < half
    assert epsilon(0.0, 10, 5, 8, DELTA) == math.inf


def _dp_cfg(*extra: str) -> config.ExperimentConfig:
    return config.load(SMOKE, ["fed.weighting=uniform", *extra])


def _uploads(cfg: config.ExperimentConfig) -> list[tuple[TensorDict, TensorDict, int]]:
    """Return ``(upload, sent, rank)`` of every client's round-1 turn of ``cfg``."""
    exp = build(cfg)
    alg = exp.algorithm
    state = alg.server_init(template(exp.model), exp.clients, cfg.lora, cfg.seed)
    rnd = RoundInfo(1, cfg.seed)
    out = []
    for client in exp.clients:
        payload = canonical_payload(alg.download(state, client, rnd))
        work = client_work(
            cfg, alg, exp.model, payload, {}, client, exp.shares[client.cid], rnd, cfg.train
        )
        assert work.upload is not None
        out.append((work.upload.tensors, payload.tensors, client.rank))
    return out


def test_clipping_scales_the_update_in_its_native_shapes() -> None:
    raw = _uploads(_dp_cfg("algorithm=fedit"))
    bound = 0.5 * min(update_norm(u, s) for u, s, _ in raw)
    clipped = _uploads(_dp_cfg("algorithm=fedit", f"dp.clip_norm={bound}"))
    assert {r for *_, r in raw} == {2, 4}  # mixed ranks: factors of different shapes
    for (u, sent, rank), (c, _, _) in zip(raw, clipped, strict=True):
        factor = bound / update_norm(u, sent)
        assert update_norm(c, sent) == pytest.approx(bound, rel=1e-5)
        for k, v in u.items():
            if k.endswith(".lora_A"):
                assert v.shape[0] == rank  # A (r_k, d_in): the client's own rank
            assert c[k].shape == v.shape
            ref = sent[k] if k in sent and sent[k].shape == v.shape else torch.zeros_like(v)
            assert torch.allclose(c[k] - ref, factor * (v - ref), atol=1e-6), k


@pytest.mark.parametrize(
    ("mode", "extra", "divisor"),
    [
        ("upload", ["algorithm=ilora"], 1.0),
        ("aggregate", ["algorithm=fedit", "lora.rank_policy=uniform"], 2.0),  # √m, m = 4
    ],
)
def test_the_noise_measured_on_a_turn_has_the_configured_std(
    mode: str, extra: list[str], divisor: float
) -> None:
    sigma, bound = 0.7, 0.05
    dp = [f"dp.clip_norm={bound}", f"dp.noise={mode}", *extra]
    clipped = _uploads(_dp_cfg(*dp))
    noisy = _uploads(_dp_cfg(*dp, f"dp.noise_multiplier={sigma}"))
    noise = torch.cat(
        [
            (n[k] - c[k]).flatten().double()
            for (n, _, _), (c, _, _) in zip(noisy, clipped, strict=True)
            for k in c
        ]
    )
    assert noise.numel() > 2000
    want = sigma * bound / divisor
    assert float(noise.std()) == pytest.approx(want, rel=0.05)
    assert abs(float(noise.mean())) < 4 * want / math.sqrt(noise.numel())


def test_history_carries_the_cumulative_epsilon_and_the_summary_the_final_one() -> None:
    cfg = _dp_cfg(
        "algorithm=ilora", "dp.clip_norm=1", "dp.noise_multiplier=1.5", "fed.fraction=0.5"
    )
    history = run(cfg).history
    eps = [r.metrics["epsilon"] for r in history.records]
    assert eps == [epsilon(1.5, 4, 2, r, DELTA) for r in (1, 2)]
    assert eps[0] < eps[1]
    assert history.summary()["epsilon"] == eps[-1]
    clip_only = run(_dp_cfg("algorithm=ilora", "dp.clip_norm=1")).history
    assert all("epsilon" not in r.metrics for r in clip_only.records)
    assert "epsilon" not in clip_only.summary()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dp.clip_norm=1"], "dp needs fed.weighting: uniform"),
        (
            ["fed.weighting=uniform", "dp.clip_norm=1", "dp.noise=aggregate", "algorithm=ilora"],
            "algorithm 'ilora' with ranks",
        ),
        (
            ["fed.weighting=uniform", "dp.clip_norm=1", "dp.noise=aggregate", "algorithm=fedit"],
            "ranks \\[2, 4\\] does not aggregate one",
        ),
        (["fed.weighting=uniform", "dp.clip_norm=1", "algorithm=centralized"], "pools every"),
    ],
)
def test_settings_the_analysis_does_not_cover_are_refused(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(config.ConfigError, match=message):
        validate(config.load(SMOKE, overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dp.noise_multiplier=1", "needs dp.clip_norm > 0"),
        ("dp.clip_norm=-1", "dp.clip_norm must be a finite number >= 0"),
        ("dp.delta=0", "dp.delta must be in \\(0, 1\\)"),
        ("dp.noise=local", "dp.noise must be one of"),
    ],
)
def test_bad_dp_values_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load(SMOKE, [override])
