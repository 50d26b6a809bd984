"""ILoRA-S's ``control_scope``: control variates on all tensors, the adapters or the head."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from conftest import TinySetup
from ilora import config
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.ilora import ILoRA
from ilora.algorithms.ilora import ILoRAState
from ilora.algorithms.traffic import Contact
from ilora.algorithms.traffic import Shapes
from ilora.bench.comm import client_bytes
from ilora.bench.protocol import Variant
from ilora.engine.setup import validate
from ilora.lora.spec import LoRASpec
from ilora.lora.state import template
from ilora.types import ClientContext
from ilora.types import RoundInfo
from ilora.types import Upload

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
SPEC = LoRASpec(alpha=4.0)
RANK = 2
HEAD = {"classifier.weight", "classifier.bias"}
ADAPTERS = {f"fc{i}.lora_{f}" for i in (1, 2) for f in "AB"}
IN_SCOPE = {"all": HEAD | ADAPTERS, "adapters": ADAPTERS, "head": HEAD}


def _leading(key: str, c: torch.Tensor, r: int) -> torch.Tensor:
    """The server control cut to rank ``r``, written out: rows of A, columns of B, head whole."""
    return c[:r] if key.endswith("lora_A") else c[:, :r] if key.endswith("lora_B") else c


def _randn(shapes: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in shapes.items()}


def _trainable(state: ILoRAState) -> dict[str, torch.Tensor]:
    """Every tensor a rank-2 client trains: the factors at its rank and the head."""
    return {k: _leading(k, v, RANK) for k, v in {**state.init, **state.head}.items()}


def _case(scope: str) -> tuple[ILoRA, ILoRAState, ClientContext, dict[str, torch.Tensor]]:
    """A server with random controls (at r_max = 3), a rank-2 client's context and its c_k."""
    alg = create_algorithm("ilora-s", {"control_scope": scope})
    assert isinstance(alg, ILoRA)
    setup = TinySetup(SPEC, [RANK, 3])
    model = setup.model()
    state = alg.server_init(template(model), setup.clients(), SPEC, 0)
    state = dataclasses.replace(state, control=_randn(state.control, 1))
    payload = alg.download(state, setup.clients()[0], RoundInfo(1, 0))
    c_k = {k: torch.randn(_leading(k, v, RANK).shape) for k, v in state.control.items()}
    ctx = ClientContext(setup.clients()[0], RoundInfo(1, 0), payload, SPEC, setup.train, {})
    return alg, state, ctx, c_k


@pytest.mark.parametrize("scope", ["all", "adapters", "head"])
def test_only_the_tensors_in_scope_get_a_control_and_their_correction(scope: str) -> None:
    alg, state, ctx, c_k = _case(scope)
    assert set(state.control) == IN_SCOPE[scope]
    sent = {k[3:] for k in ctx.payload.tensors if k.startswith("cv/")}
    assert sent == IN_SCOPE[scope]
    trained = _trainable(state)
    assert set(trained) == HEAD | ADAPTERS
    grads = _randn(trained, 2)
    cstate = {f"cv/{k}": v for k, v in c_k.items()}
    out = alg.grad_transform(grads, trained, ctx, cstate)
    for k, g in grads.items():
        want = torch.zeros_like(g)
        if k in IN_SCOPE[scope]:  # ĉ − c_k, ĉ the server control cut to the client's rank
            want = _leading(k, state.control[k], RANK) - c_k[k]
        assert torch.allclose(out[k] - g, want, atol=1e-6), k


@pytest.mark.parametrize("scope", ["adapters", "head"])
def test_the_upload_and_the_server_update_carry_only_the_controls_in_scope(scope: str) -> None:
    alg, state, ctx, c_k = _case(scope)
    trained = _trainable(state)
    start = _randn(trained, 3)
    cstate = {f"cv/{k}": v for k, v in c_k.items()}
    up, new_cstate = alg.upload(trained, dataclasses.replace(ctx, start_grad=start), cstate)
    assert {k for k in up.tensors if k.startswith("cv/")} == {f"cv/{k}" for k in IN_SCOPE[scope]}
    for k in IN_SCOPE[scope]:
        assert torch.allclose(up.tensors[f"cv/{k}"], start[k] - c_k[k]), k
        assert torch.equal(new_cstate[f"cv/{k}"], start[k]), k
    assert set(new_cstate) == {f"cv/{k}" for k in IN_SCOPE[scope]}
    new = alg.aggregate(state, {0: Upload(up.tensors, up.weight)}, RoundInfo(1, 0))
    assert set(new.control) == IN_SCOPE[scope]
    for k in IN_SCOPE[scope]:  # c <- c + Δc_k / N, N = 2, at the client's leading rank
        assert torch.allclose(
            _leading(k, new.control[k], RANK),
            _leading(k, state.control[k], RANK) + up.tensors[f"cv/{k}"] / 2,
            atol=1e-6,
        ), k


def test_a_scope_without_control_variates_or_an_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="control_scope applies to ILoRA-S only"):
        create_algorithm("ilora", {"control_scope": "head"})
    with pytest.raises(ValueError, match="control_scope must be one of"):
        create_algorithm("ilora-s", {"control_scope": "lora"})


def test_the_protocol_variant_parses_into_per_algorithm_overrides_and_loads() -> None:
    overrides = list(Variant.parse("ilora-s+control_scope=head").overrides())
    assert "per_algorithm.ilora-s.control_scope=head" in overrides
    alg, _ = validate(config.load(SMOKE, overrides))
    assert isinstance(alg, ILoRA) and alg.control_variates and alg.control_scope == "head"


def test_the_byte_formula_counts_the_controls_of_the_scope_only() -> None:
    shapes = Shapes(layers=[(8, 6), (8, 8)], n_head=27)
    pair, head = 2 * (8 + 6) + 2 * (8 + 8), 27  # B, A at rank 2 per layer; the head
    extra = {"all": pair + head, "adapters": pair, "head": head}
    for rnd in (1, 2):
        plain = client_bytes("ilora", shapes, Contact(RANK, rnd, rnd == 1, 3, {}))
        for scope, floats in extra.items():
            got = client_bytes(
                "ilora-s", shapes, Contact(RANK, rnd, rnd == 1, 3, {"control_scope": scope})
            )
            assert got == (plain[0] + 4 * floats, plain[1] + 4 * floats), (scope, rnd)
