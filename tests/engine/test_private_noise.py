"""DP noise that nobody but the client can remove; sampling the accountant can rely on.

The attack (issue 17): whoever holds ``config.yaml`` (the server; on Flower every client, from
the handshake) regenerates each client's noise from the seed and subtracts it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from ilora import config
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.privacy import ReproducibleNoiseWarning
from ilora.engine.privacy import noise_std
from ilora.engine.privacy import secure_normal
from ilora.engine.sampling import num_sampled
from ilora.engine.sampling import sampling_seed
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.engine.turn import canonical_payload
from ilora.engine.turn import client_work
from ilora.lora.state import template
from ilora.seeding import generator
from ilora.types import RoundInfo
from ilora.types import TensorDict

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
SIGMA, CLIP = 1.0, 0.05
DP = ["fed.weighting=uniform", "algorithm=fedit", f"dp.clip_norm={CLIP}"]


def _turns(cfg: config.ExperimentConfig) -> dict[int, tuple[TensorDict, TensorDict]]:
    """Return ``cid -> (upload, sent)`` of every client's round-1 turn."""
    exp = build(cfg)
    state = exp.algorithm.server_init(template(exp.model), exp.clients, cfg.lora, cfg.seed)
    rnd = RoundInfo(1, cfg.seed)
    out = {}
    for c in exp.clients:
        payload = canonical_payload(exp.algorithm.download(state, c, rnd))
        work = client_work(
            cfg, exp.algorithm, exp.model, payload, {}, c, exp.shares[c.cid], rnd, cfg.train
        )
        assert work.upload is not None
        out[c.cid] = (work.upload.tensors, payload.tensors)
    return out


def _attack(cfg: config.ExperimentConfig, noisy: TensorDict, cid: int) -> TensorDict:
    """Regenerate the noise from the config's values, as main drew it, and subtract it."""
    g = generator(cfg.seed, "dp-noise", 1, cid)
    std = noise_std(cfg.dp, num_sampled(cfg.data.num_clients, cfg.fed.fraction))
    out = {}
    for key in sorted(noisy):
        noise = torch.randn(noisy[key].shape, generator=g, dtype=torch.float64) * std
        out[key] = noisy[key].double() - noise
    return out


def _residual(cfg: config.ExperimentConfig) -> float:
    """Return the largest error of the attacker's estimate of any clipped upload entry."""
    clipped = _turns(config.load(SMOKE, DP))  # the truth: the same turns without noise
    noisy = _turns(cfg)
    worst = 0.0
    for cid, (upload, _) in noisy.items():
        guess = _attack(cfg, upload, cid)
        truth = clipped[cid][0]
        worst = max(worst, max(float((guess[k] - truth[k].double()).abs().max()) for k in truth))
    return worst


def test_regenerating_the_noise_from_the_config_does_not_recover_the_clipped_update() -> None:
    cfg = config.load(SMOKE, [*DP, f"dp.noise_multiplier={SIGMA}"])
    # the estimate is off by about two noise draws: nothing is recovered
    assert _residual(cfg) > SIGMA * CLIP


def test_with_reproducible_noise_the_same_attack_succeeds_and_a_warning_says_so() -> None:
    """The attack is real: under the test-only option it removes the noise exactly."""
    cfg = config.load(SMOKE, [*DP, f"dp.noise_multiplier={SIGMA}", "dp.reproducible_noise=true"])
    with pytest.warns(ReproducibleNoiseWarning, match="protects nothing"):
        assert _residual(cfg) < 1e-3 * SIGMA * CLIP


def test_two_runs_of_one_dp_config_draw_different_noise_and_samples() -> None:
    cfg = config.load(SMOKE, [*DP, "dp.noise_multiplier=1", "fed.fraction=0.5", "fed.rounds=1"])
    a, b = _turns(cfg), _turns(cfg)
    assert all(not torch.equal(a[c][0][k], b[c][0][k]) for c in a for k in a[c][0])
    seeds = {sampling_seed(cfg) for _ in range(4)}
    assert len(seeds) == 4 and cfg.seed not in seeds


def test_the_secret_sampling_seed_is_kept_in_the_checkpoint_and_resumed_from() -> None:
    cfg = config.load(SMOKE, [*DP, "dp.noise_multiplier=1", "fed.fraction=0.5", "fed.rounds=2"])
    saved: list[Checkpoint] = []
    run(cfg, on_checkpoint=saved.append)
    assert saved[0].sample_seed == saved[1].sample_seed != cfg.seed
    assert sampling_seed(cfg, saved[0].sample_seed) == saved[0].sample_seed
    public = config.load(SMOKE, [*DP, "dp.noise_multiplier=1", "dp.reproducible_noise=true"])
    assert sampling_seed(public) == public.seed
    assert sampling_seed(config.load(SMOKE, [])) == 0


def test_dp_runs_with_reproducible_noise_are_bitwise_reproducible() -> None:
    cfg = config.load(
        SMOKE, [*DP, "dp.noise_multiplier=1", "fed.fraction=0.5", "dp.reproducible_noise=true"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReproducibleNoiseWarning)
        a, b = run(cfg), run(cfg)
    assert a.history.records[-1].metrics == b.history.records[-1].metrics
    assert all(torch.equal(a.setup.factors[k], b.setup.factors[k]) for k in a.setup.factors)


def test_secure_normal_is_standard_normal() -> None:
    z = secure_normal((400, 501))
    assert z.shape == (400, 501) and z.dtype == torch.float64 and bool(torch.isfinite(z).all())
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert float(z.std()) == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))
    # Gaussian kurtosis 3, within 5 standard errors (Var z^4 = 105 - 9 = 96): never by chance
    assert float((z**4).mean()) == pytest.approx(3.0, abs=5 * math.sqrt(96 / n))
    assert float((z.abs() < 1).double().mean()) == pytest.approx(0.6827, abs=0.005)
    assert not torch.equal(secure_normal((5,)), secure_normal((5,)))


@pytest.mark.parametrize(("reproducible", "source"), [(False, "os.urandom"), (True, "config seed")])
def test_the_manifest_records_the_noise_source(
    reproducible: bool, source: str, tmp_path: Path
) -> None:
    import json

    from ilora.engine.outputs import RunWriter

    flag = f"dp.reproducible_noise={str(reproducible).lower()}"
    cfg = config.load(SMOKE, [*DP, "dp.noise_multiplier=1", flag])
    RunWriter(tmp_path, cfg)
    assert source in json.loads((tmp_path / "manifest.json").read_text())["dp_noise"]
