"""Golden math of pFedLoRU: a shared FedLoRU branch plus a personal branch kept by each client."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

import numpy as np
import pytest
import torch
from torch import nn

from conftest import OneLayerNet
from conftest import TinySetup
from conftest import assert_rejected
from conftest import one_layer_net
from conftest import run_rounds
from conftest import tiny_data
from ilora.algorithms.pfedloru import PFedLoRU
from ilora.config import TrainConfig
from ilora.engine.local import client_round
from ilora.lora.spec import LoRASpec
from ilora.lora.state import adapted
from ilora.lora.state import base_weights
from ilora.lora.state import load_setup
from ilora.lora.state import template
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

SPEC = LoRASpec(alpha=4.0, rank=2)  # s(1) = 4, s(2) = 2, s(3) = 4/3
CLIENTS = [ClientInfo(0, 2, 20), ClientInfo(1, 1, 40)]
TRAIN = TrainConfig(steps=4, batch_size=8, lr=0.05, head_lr=0.05)


def _net() -> nn.Module:
    return one_layer_net(SPEC)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _payload(alg: PFedLoRU, client: ClientInfo, seed: int = 0) -> Payload:
    """The download of a state whose factors, residual and head are all non-trivial."""
    state = alg.server_init(template(_net()), CLIENTS, SPEC, 0)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(v.shape, generator=g) for k, v in state.tensors.items()}
    return alg.download(type(state)(tensors, SPEC, state.rank), client, RoundInfo(2, 0))


def _cstate(r_p: int, seed: int = 1, private: bool = True) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    out = {
        "personal/l.lora_A": torch.randn(r_p, 6, generator=g),  # L (r_p, d_in)
        "personal/l.lora_B": torch.randn(5, r_p, generator=g),  # U (d_out, r_p)
    }
    if private:
        out["personal/l.residual"] = torch.randn(5, 6, generator=g)  # R_k
    return out


def _ctx(pay: Payload, client: ClientInfo, trained: TensorDict | None = None) -> ClientContext:
    return ClientContext(
        client, RoundInfo(2, 0), pay, SPEC, TRAIN, base=base_weights(_net()), trained=trained
    )


def _reference(pay: Payload, cstate: TensorDict, r_g: int, r_p: int) -> np.ndarray:
    """``R + R_k + s(r_g) B A + s(r_p) U L``: the client's delta, from the paper's formula."""
    t = pay.tensors
    glob = 4.0 / r_g * _np(t["l.lora_B"]) @ _np(t["l.lora_A"])  # (5, r_g) @ (r_g, 6)
    own = 4.0 / r_p * _np(cstate["personal/l.lora_B"]) @ _np(cstate["personal/l.lora_A"])
    return _np(t["l.residual"]) + _np(cstate["personal/l.residual"]) + glob + own


def _delta(setup: LocalSetup) -> np.ndarray:
    model = _net()
    load_setup(model, setup)
    return _np(adapted(model)["l"].delta_weight())


@pytest.mark.parametrize(("r_p", "client"), [(1, CLIENTS[0]), (3, CLIENTS[1]), (0, CLIENTS[0])])
def test_every_phase_and_the_joint_adapter_apply_both_branches_exactly(
    r_p: int, client: ClientInfo
) -> None:
    alg = PFedLoRU(personal_rank=r_p)
    rank_p = r_p or client.rank
    pay, cstate = _payload(alg, client), _cstate(rank_p)
    ref = _reference(pay, cstate, client.rank, rank_p)
    first, _ = alg.client_init(_ctx(pay, client), cstate)  # personal phase
    assert first.steps == 2 and first.factors["l.lora_A"].shape == (rank_p, 6)
    assert torch.equal(first.factors["l.lora_A"], cstate["personal/l.lora_A"])
    assert np.allclose(_delta(first), ref, atol=1e-5)
    trained = {k.removeprefix("personal/"): v for k, v in cstate.items() if "lora" in k}
    second, _ = alg.client_init(
        _ctx(pay, client, {**trained, "head.weight": torch.ones(3, 5)}), cstate
    )  # global phase
    assert second.steps is None and torch.equal(second.factors["l.lora_A"], pay.tensors["l.lora_A"])
    assert torch.equal(second.factors["head.weight"], torch.ones(3, 5))
    assert np.allclose(_delta(second), ref, atol=1e-5)
    joint, _ = PFedLoRU(personal_rank=r_p, schedule="joint").client_init(_ctx(pay, client), cstate)
    assert joint.factors["l.lora_A"].shape == (client.rank + rank_p, 6)
    assert "l.lora_C" not in (joint.trainable or set())
    assert np.allclose(_delta(joint), ref, atol=1e-5)


def test_joint_gradients_are_those_of_two_separate_branches() -> None:
    """The scalings sit in the frozen core C, so each factor's gradient is its branch's own."""
    client, alg = CLIENTS[0], PFedLoRU(personal_rank=1, schedule="joint")
    pay, cstate = _payload(alg, client), _cstate(1)
    setup, _ = alg.client_init(_ctx(pay, client), cstate)
    model, x = _net(), torch.randn(7, 6, generator=torch.Generator().manual_seed(3))
    params = load_setup(model, setup)
    assert "l.lora_C" not in params
    (model(x) ** 2).sum().backward()
    # the reference: two separate branches with their own scalings, written out
    t, ref = pay.tensors, OneLayerNet()
    W = model.l.base.weight.detach() + t["l.residual"] + cstate["personal/l.residual"]
    B, A = t["l.lora_B"].clone().requires_grad_(), t["l.lora_A"].clone().requires_grad_()
    U = cstate["personal/l.lora_B"].clone().requires_grad_()
    L = cstate["personal/l.lora_A"].clone().requires_grad_()
    hidden = x @ W.T + model.l.base.bias + 2.0 * (x @ A.T) @ B.T + 4.0 * (x @ L.T) @ U.T
    ref.head.load_state_dict({"weight": t["head.weight"], "bias": t["head.bias"]})
    (ref.head(torch.relu(hidden)) ** 2).sum().backward()
    gB, gA = params["l.lora_B"].grad, params["l.lora_A"].grad
    assert gB is not None and gA is not None
    for got, want in [(gB[:, :2], B.grad), (gB[:, 2:], U.grad), (gA[:2], A.grad), (gA[2:], L.grad)]:
        assert want is not None and torch.allclose(got, want, atol=1e-5)


@dataclass(frozen=True)
class Spy(PFedLoRU):
    """Records every ``client_init`` call: (step, trained, setup)."""

    calls: list[tuple[int, TensorDict | None, LocalSetup]] = field(default_factory=list)

    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        setup, cstate = super().client_init(ctx, cstate)
        self.calls.append((ctx.step, ctx.trained, setup))
        return setup, cstate


def test_alternating_round_trains_personal_then_global_each_with_the_other_frozen() -> None:
    client, alg = CLIENTS[0], Spy(personal_rank=1)
    pay, cstate = _payload(alg, client), _cstate(1, private=False)
    up, new = client_round(
        alg, _net(), tiny_data(24, 0), pay, cstate, client, RoundInfo(2, 0), SPEC, TRAIN
    )
    (s0, t0, first), (s1, t1, second) = alg.calls
    assert (s0, t0, first.steps) == (0, None, 2) and s1 == 2 and t1 is not None
    t = pay.tensors
    # personal phase: the global branch is folded into the residual, R + s_g B A
    glob = 2.0 * _np(t["l.lora_B"]) @ _np(t["l.lora_A"])
    assert np.allclose(_np(first.residual["l.residual"]), _np(t["l.residual"]) + glob, atol=1e-5)
    assert set(first.factors) == {"l.lora_A", "l.lora_B", "head.weight", "head.bias"}
    # global phase: the global branch as received, the personal one as trained, folded
    assert torch.equal(second.factors["l.lora_A"], t["l.lora_A"])
    assert torch.equal(second.factors["l.lora_B"], t["l.lora_B"])
    assert not torch.equal(t1["l.lora_B"], cstate["personal/l.lora_B"])  # personal trained
    own = 4.0 * _np(t1["l.lora_B"]) @ _np(t1["l.lora_A"])
    assert np.allclose(_np(second.residual["l.residual"]), _np(t["l.residual"]) + own, atol=1e-5)
    assert torch.equal(second.factors["head.weight"], t1["head.weight"])  # head continues
    # the personal branch kept is exactly the one trained in its phase (frozen afterwards)
    assert torch.equal(new["personal/l.lora_B"], t1["l.lora_B"])
    assert torch.equal(new["personal/l.lora_A"], t1["l.lora_A"])
    # only the global branch and the head travel, at the client's rank, trained
    assert set(up.tensors) == {"l.lora_A", "l.lora_B", "head.weight", "head.bias"}
    assert up.tensors["l.lora_A"].shape == (2, 6)
    assert not torch.equal(up.tensors["l.lora_B"], t["l.lora_B"])


def test_one_local_step_trains_only_the_global_branch() -> None:
    client, alg = CLIENTS[0], Spy(personal_rank=1)
    pay, cstate = _payload(alg, client), _cstate(1, private=False)
    one = TrainConfig(steps=1, batch_size=8, lr=0.05, head_lr=0.05)
    _, new = client_round(
        alg, _net(), tiny_data(24, 0), pay, cstate, client, RoundInfo(2, 0), SPEC, one
    )
    assert len(alg.calls) == 1 and alg.calls[0][2].steps is None
    assert torch.equal(new["personal/l.lora_B"], cstate["personal/l.lora_B"])


def test_joint_round_uploads_the_global_part_and_keeps_the_personal_part() -> None:
    client, alg = CLIENTS[1], PFedLoRU(personal_rank=2, schedule="joint")
    pay, cstate = _payload(alg, client), _cstate(2, private=False)
    up, new = client_round(
        alg, _net(), tiny_data(24, 0), pay, cstate, client, RoundInfo(2, 0), SPEC, TRAIN
    )
    assert set(up.tensors) == {"l.lora_A", "l.lora_B", "head.weight", "head.bias"}
    assert up.tensors["l.lora_A"].shape == (1, 6) and up.tensors["l.lora_B"].shape == (5, 1)
    assert new["personal/l.lora_A"].shape == (2, 6) and new["personal/l.lora_B"].shape == (5, 2)
    assert not torch.equal(new["personal/l.lora_B"], cstate["personal/l.lora_B"])
    assert not torch.equal(up.tensors["l.lora_B"], pay.tensors["l.lora_B"])


def test_personal_branch_never_travels_and_differs_across_clients(tiny_setup: TinySetup) -> None:
    res = run_rounds("pfedloru", tiny_setup, rounds=2)
    head = {"classifier.weight", "classifier.bias"}
    for ups in res.uploads:
        for cid, u in ups.items():
            assert set(u.tensors) == {"fc1.lora_A", "fc1.lora_B", "fc2.lora_A", "fc2.lora_B", *head}
            assert u.tensors["fc1.lora_A"].shape == (res.clients[cid].rank, 6)
    for payloads in res.payloads:
        assert all(not any("personal" in k for k in p.tensors) for p in payloads.values())
    own = [res.cstates[c.cid] for c in res.clients]
    assert all(
        set(o) == {f"personal/{m}.lora_{f}" for m in ("fc1", "fc2") for f in "AB"} for o in own
    )
    assert all(float(o["personal/fc1.lora_B"].abs().sum()) > 0 for o in own)  # trained
    a, b = own[0]["personal/fc2.lora_A"], own[2]["personal/fc2.lora_A"]  # ranks 2 and 3
    assert not torch.equal(a, b[: a.shape[0]])


def test_server_averages_the_global_branch_and_merges_every_tau() -> None:
    alg = PFedLoRU(tau=2, rescale_b=False)  # uploads as they are; the mapping: test_invariants
    state = alg.server_init(template(_net()), CLIENTS, SPEC, 0)
    g = torch.Generator().manual_seed(9)
    ups = {
        c.cid: Upload(
            {
                "l.lora_A": torch.randn(c.rank, 6, generator=g),
                "l.lora_B": torch.randn(5, c.rank, generator=g),
                "head.weight": torch.randn(3, 5, generator=g),
                "head.bias": torch.randn(3, generator=g),
            },
            float(c.num_examples),
        )
        for c in CLIENTS
    }
    A0 = _np(ups[0].tensors["l.lora_A"])
    A1 = np.vstack([_np(ups[1].tensors["l.lora_A"]), np.zeros((1, 6))])  # zero-padded
    B0 = _np(ups[0].tensors["l.lora_B"])
    B1 = np.hstack([_np(ups[1].tensors["l.lora_B"]), np.zeros((5, 1))])
    A, B = (20 * A0 + 40 * A1) / 60, (20 * B0 + 40 * B1) / 60
    one = alg.aggregate(state, ups, RoundInfo(1, 0))
    assert np.allclose(_np(one.tensors["l.lora_A"]), A, atol=1e-6)
    assert np.allclose(_np(one.tensors["l.lora_B"]), B, atol=1e-6)
    two = alg.aggregate(state, ups, RoundInfo(2, 0))  # round 2 % tau == 0: merged
    assert np.allclose(_np(two.tensors["l.residual"]), 2.0 * B @ A, atol=1e-5)
    assert np.array_equal(_np(two.tensors["l.lora_B"]), np.zeros((5, 2)))
    assert two.metrics["agg_error"] == one.metrics["agg_error"] > 0


def test_personal_tau_merges_the_personal_branch_into_a_private_residual() -> None:
    client, alg = CLIENTS[0], PFedLoRU(personal_rank=1, personal_tau=2)
    pay, cstate = _payload(alg, client), _cstate(1, private=False)
    trained = {"l.lora_A": pay.tensors["l.lora_A"], "l.lora_B": pay.tensors["l.lora_B"]}
    _, once = alg.upload(trained, _ctx(pay, client), cstate)
    assert int(once["personal/count"]) == 1 and "personal/l.residual" not in once
    before, _ = alg.client_init(_ctx(pay, client), once)
    _, twice = alg.upload(trained, _ctx(pay, client), once)
    assert int(twice["personal/count"]) == 2
    U, L = _np(cstate["personal/l.lora_B"]), _np(cstate["personal/l.lora_A"])
    assert np.allclose(_np(twice["personal/l.residual"]), 4.0 * U @ L, atol=1e-5)
    assert np.array_equal(_np(twice["personal/l.lora_B"]), np.zeros((5, 1)))  # restarted
    assert not torch.equal(twice["personal/l.lora_A"], cstate["personal/l.lora_A"])
    after, _ = alg.client_init(_ctx(pay, client), twice)
    assert np.allclose(_delta(after), _delta(before), atol=1e-5)  # the client's model is kept


def test_personal_steps_split() -> None:
    assert [PFedLoRU().personal_steps(n) for n in (1, 2, 4, 5)] == [0, 1, 2, 2]
    assert PFedLoRU(personal_fraction=0.9).personal_steps(10) == 9
    assert PFedLoRU(personal_fraction=0.01).personal_steps(10) == 1


def test_invalid_hyperparameters_are_rejected() -> None:
    assert_rejected(
        "pfedloru",
        {"tau": -1},
        {"personal_rank": -1},
        {"personal_tau": -2},
        {"personal_fraction": 0.0},
        {"personal_fraction": 1.0},
        {"schedule": "sequential"},
    )


@dataclass(frozen=True)
class ZeroPhase(PFedLoRU):
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        setup, cstate = super().client_init(ctx, cstate)
        return LocalSetup(setup.factors, setup.residual, steps=0), cstate


def test_the_loop_rejects_an_empty_phase() -> None:
    client, alg = CLIENTS[0], ZeroPhase(personal_rank=1)
    with pytest.raises(ValueError, match="LocalSetup.steps"):
        client_round(
            alg, _net(), tiny_data(24, 0), _payload(alg, client), {}, client, RoundInfo(2, 0),
            SPEC, TRAIN,
        )  # fmt: skip
