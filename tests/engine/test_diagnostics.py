"""``agg_error`` and ``download_error`` against an independent numpy computation.

One round of the embedded engine at mixed ranks; the test records what every client started
from and uploaded (wrapping the local loop), then recomputes both metrics in float64 numpy from
the factors alone: ``D = residual + s(r)·B A`` per adapted layer, ``ΔW_k = s(r_k)(B'_k A'_k −
B_k A_k)``, ``G`` the exported global model's ``D``, ``p_k = n_k / Σ n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch

from ilora import config as config_mod
from ilora.engine import turn
from ilora.engine.local import make_context
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.lora import keys
from ilora.lora.spec import LoRASpec
from ilora.lora.state import base_weights
from ilora.types import LocalSetup
from ilora.types import RoundInfo

Arrays = dict[str, np.ndarray]


def _dense(setup: LocalSetup, lora: LoRASpec, modules: list[str]) -> Arrays:
    """Return ``residual + s(r)·B A`` per module in float64 (zero where the setup has none)."""
    out = {}
    for m in modules:
        f, res = setup.factors, setup.residual
        d = res[f"{m}.residual"].double().numpy() if f"{m}.residual" in res else 0.0
        if f"{m}.lora_A" in f:
            A, B = f[f"{m}.lora_A"].double().numpy(), f[f"{m}.lora_B"].double().numpy()
            d = d + lora.scale(A.shape[0]) * (B @ A)
        out[m] = np.asarray(d)
    return out


def _ratio(num: list[np.ndarray], den: list[np.ndarray]) -> float:
    return float(np.sqrt(sum((x**2).sum() for x in num) / sum((x**2).sum() for x in den)))


@pytest.mark.parametrize("name", ["fedit", "ilora", "flora"])
def test_both_metrics_equal_an_independent_numpy_computation(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_mod.load("configs/smoke.yaml", [f"algorithm={name}", "fed.rounds=1"])
    assert len(set(cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed))) > 1
    exp = build(cfg)
    seen: dict[int, tuple[Any, Any]] = {}
    inner = turn.client_round

    def recording(*args: Any) -> Any:
        upload, cstate = inner(*args)
        seen[args[5].cid] = (args[3], upload)  # (payload, upload) by client id
        return upload, cstate

    monkeypatch.setattr(turn, "client_round", recording)
    alg, lora, model = exp.algorithm, cfg.lora, exp.model
    base = {k: v.double().numpy().copy() for k, v in base_weights(model).items()}
    modules = keys.modules(base)
    state0 = alg.server_init({**base_weights(model), **_head(model)}, exp.clients, lora, cfg.seed)
    result = run(cfg, exp=exp)
    metrics = result.history.records[0].metrics

    def start(payload: Any, client: Any, rnd: RoundInfo) -> LocalSetup:
        ctx = make_context(model, payload, client, rnd, lora, cfg.train)
        return alg.client_init(ctx, {})[0]

    total = sum(seen[c][1].weight for c in seen)
    ideal = {m: np.zeros_like(base[f"{m}.base"]) for m in modules}
    for cid, (payload, upload) in seen.items():
        client = exp.clients[cid]
        before = start(payload, client, RoundInfo(1, cfg.seed))
        after = LocalSetup(factors=dict(upload.tensors), residual=before.residual)
        d0, d1 = _dense(before, lora, modules), _dense(after, lora, modules)
        for m in modules:
            ideal[m] += upload.weight / total * (d1[m] - d0[m])
    g0 = _dense(alg.export(state0), lora, modules)
    g1 = _dense(alg.export(result.state), lora, modules)
    want = _ratio([g1[m] - g0[m] - ideal[m] for m in modules], [ideal[m] for m in modules])
    assert metrics["agg_error"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    dists = []
    for client in exp.clients:
        rnd = RoundInfo(2, cfg.seed)
        own = _dense(start(turn.canonical_payload(alg.download(result.state, client, rnd)),
                           client, rnd), lora, modules)  # fmt: skip
        w = {m: base[f"{m}.base"] + g1[m] for m in modules}
        dists.append(_ratio([own[m] - g1[m] for m in modules], [w[m] for m in modules]))
    assert metrics["download_error"] == pytest.approx(np.mean(dists), rel=1e-4, abs=1e-7)


def _head(model: torch.nn.Module) -> Mapping[str, torch.Tensor]:
    from ilora.lora.state import template

    return {k: v for k, v in template(model).items() if keys.is_param(k)}


def test_an_exact_round_has_zero_agg_error_and_dp_rounds_have_none() -> None:
    """The pooled reference applies its one client's change exactly; DP never sends ΔW_k."""
    central = run(config_mod.load("configs/smoke.yaml", ["algorithm=centralized"]))
    assert all(r.metrics["agg_error"] < 1e-6 for r in central.history.records)
    dp = ["dp.clip_norm=0.5", "dp.noise_multiplier=1.0", "fed.weighting=uniform"]
    noisy = run(config_mod.load("configs/smoke.yaml", dp))
    assert all("agg_error" not in r.metrics for r in noisy.history.records)
    assert all("download_error" in r.metrics for r in noisy.history.records)
