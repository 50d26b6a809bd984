"""Robust aggregation: coordinate-wise median / trimmed mean, golden against numpy and Python."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from conftest import TinySetup
from conftest import run_rounds
from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import create_algorithm
from ilora.engine import faults
from ilora.engine.robust import coordinate_median
from ilora.engine.robust import mean_algorithms
from ilora.engine.robust import robust_centre
from ilora.engine.robust import robust_uploads
from ilora.engine.robust import trimmed_mean
from ilora.engine.setup import validate
from ilora.engine.simulation import run
from ilora.lora.spec import LoRASpec
from ilora.types import RoundInfo
from ilora.types import Upload

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def _python_trimmed_mean(values: list[float], fraction: float) -> float:
    k = math.floor(fraction * len(values))
    return statistics.fmean(sorted(values)[k : len(values) - k])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9),
    fraction=st.sampled_from([0.0, 0.1, 0.2, 0.34, 0.49]),
    seed=st.integers(0, 10_000),
)
def test_statistics_match_numpy_and_plain_python(n: int, fraction: float, seed: int) -> None:
    x = torch.randn(n, 3, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    arr = x.numpy()
    assert np.allclose(coordinate_median(x).numpy(), np.median(arr, axis=0), atol=1e-12)
    got = trimmed_mean(x, fraction).numpy()
    for i in range(3):
        for j in range(2):
            ref = _python_trimmed_mean([float(v) for v in arr[:, i, j]], fraction)
            assert got[i, j] == pytest.approx(ref, abs=1e-12)


def test_mean_algorithms_are_the_flagged_ones_and_include_the_known_means() -> None:
    flagged = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).mean_aggregation]
    assert mean_algorithms() == flagged
    assert {"fedit", "ffa-lora", "fedloru"} <= set(flagged)  # each aggregate is Σ p_k lift(u_k)


@pytest.mark.parametrize("name", mean_algorithms())
def test_lift_keeps_the_aggregate_and_a_common_upload_aggregates_to_itself(
    name: str, tiny_setup: TinySetup
) -> None:
    res = run_rounds(name, tiny_setup)
    alg, ups = create_algorithm(name), res.uploads[-1]
    rnd = RoundInfo(2, 0)
    state = res.state  # any state of the right shapes serves as the starting point
    plain = alg.export(alg.aggregate(state, ups, rnd)).factors
    lifted = {c: Upload(alg.lift(state, u.tensors), u.weight) for c, u in ups.items()}
    again = alg.export(alg.aggregate(state, lifted, rnd)).factors
    for k in plain:
        assert torch.allclose(plain[k], again[k], atol=1e-6), k
    common = lifted[0].tensors
    relifted = alg.lift(state, common)  # a lifted upload is left as it is
    assert relifted.keys() == common.keys()
    assert all(torch.equal(relifted[k], v) for k, v in common.items())
    same = {c: Upload(dict(common), u.weight) for c, u in ups.items()}
    out = alg.export(alg.aggregate(state, same, rnd)).factors
    for k, v in common.items():
        assert torch.allclose(out[k], v, atol=1e-6), k


def _numpy_lift(name: str, key: str, t: np.ndarray, r_max: int, alpha: float) -> np.ndarray:
    """Zero-pad a factor to r_max; B also scaled by s_k/s_max = r_max/r_k where the method maps
    a client's B back to the global scale (FFA-LoRA; the others with ``rescale_b``)."""
    if key.endswith("lora_A"):
        return np.concatenate([t, np.zeros((r_max - t.shape[0], t.shape[1]))], axis=0)
    if key.endswith("lora_B"):
        r = t.shape[1]
        rescaled = name == "ffa-lora" or getattr(create_algorithm(name), "rescale_b", False)
        ratio = (alpha / r) / (alpha / r_max) if rescaled else 1.0
        return ratio * np.concatenate([t, np.zeros((t.shape[0], r_max - r))], axis=1)
    return t


@pytest.mark.parametrize("method", ["median", "trimmed_mean"])
@pytest.mark.parametrize("name", ["fedit", "ffa-lora", "fedloru"])
def test_robust_aggregate_is_the_coordinate_statistic_of_the_lifted_uploads(
    name: str, method: str
) -> None:
    setup = TinySetup(LoRASpec(alpha=4.0), [2, 4, 3, 4, 1])
    res = run_rounds(name, setup)
    alg, ups = create_algorithm(name), res.uploads[-1]
    r_max, fraction = max(setup.ranks), 0.2
    robust = robust_uploads(alg, res.state, ups, method, fraction)
    new = alg.export(alg.aggregate(res.state, robust, RoundInfo(2, 0))).factors
    for key in ups[0].tensors:
        stack = np.stack(
            [_numpy_lift(name, key, ups[c].tensors[key].double().numpy(), r_max, 4.0) for c in ups]
        )
        if method == "median":
            ref = np.median(stack, axis=0)
        else:
            flat = stack.reshape(len(ups), -1)
            ref = np.array(
                [_python_trimmed_mean(list(flat[:, i]), fraction) for i in range(flat.shape[1])]
            ).reshape(stack.shape[1:])
        assert np.allclose(new[key].double().numpy(), ref, atol=1e-6), key


def test_the_median_ignores_a_byzantine_minority() -> None:
    honest = [torch.full((4,), v) for v in (1.0, 1.2, 0.9, 1.1)]
    parts = [{"head.weight": t} for t in [*honest, torch.full((4,), -1e6)]]
    median = robust_centre(parts, "median", 0.0)["head.weight"]
    assert torch.allclose(median, torch.full((4,), 1.0))
    trimmed = robust_centre(parts, "trimmed_mean", 0.2)["head.weight"]
    assert torch.allclose(trimmed, torch.full((4,), 1.0))  # mean of 0.9, 1.0, 1.1


@pytest.mark.parametrize("name", sorted(set(ALGORITHMS.names()) - set(mean_algorithms())))
def test_other_algorithms_refuse_robust_aggregation_with_the_reason(name: str) -> None:
    cfg = config.load(SMOKE, [f"algorithm={name}", "fed.robust=median"])
    with pytest.raises(config.ConfigError, match=f"algorithm {name!r} is not one") as err:
        validate(cfg)
    assert f"it works with {', '.join(mean_algorithms())}." in str(err.value)


def test_ilora_refusal_names_its_concatenated_qr() -> None:
    cfg = config.load(SMOKE, ["algorithm=ilora", "fed.robust=trimmed_mean"])
    with pytest.raises(config.ConfigError, match="concatenated-QR aggregation"):
        validate(cfg)


@pytest.mark.parametrize("bad", ["0.5", "-0.1", ".nan"])
def test_trim_fraction_out_of_range_is_a_config_error(bad: str) -> None:
    with pytest.raises(config.ConfigError, match="fed.trim_fraction must be in"):
        config.load(SMOKE, [f"fed.trim_fraction={bad}"])


def test_robust_median_tames_scaled_clients_in_a_run() -> None:
    final_only = ["eval.every=3", "eval.personal_every=3"]  # the check reads the final loss
    base = ["algorithm=fedit", "fed.rounds=3", "data.num_clients=8", *final_only]
    byz = [*base, "faults.scale=0.2", "faults.scale_factor=1000"]
    cfg = config.load(SMOKE, byz)
    per_round = [
        [faults.draw(cfg.faults, cfg.seed, r, c) for c in range(8)].count("scale")
        for r in (1, 2, 3)
    ]
    assert sum(per_round) >= 3 and max(per_round) < 4  # a minority, every round
    clean = run(config.load(SMOKE, base)).history.summary()
    wild = run(cfg).history.summary()
    tamed = run(config.load(SMOKE, [*byz, "fed.robust=median"])).history.summary()
    assert not np.isfinite(wild["final_loss"]) or wild["final_loss"] > 2 * clean["final_loss"]
    assert tamed["final_loss"] < 1.5 * clean["final_loss"]
