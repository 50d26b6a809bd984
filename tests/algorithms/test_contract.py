"""The contract every registered algorithm passes unchanged (DESIGN.md §4.6.1)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TinySetup
from conftest import run_rounds
from conftest import tiny_data
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import create_algorithm
from ilora.engine.local import client_round
from ilora.lora import keys
from ilora.lora.state import template
from ilora.tensors import all_finite
from ilora.tensors import canonical
from ilora.types import RoundInfo

NAMES = ALGORITHMS.names()


def _state_tensors(state: object) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in dataclasses.fields(state):  # type: ignore[arg-type]
        value = getattr(state, f.name)
        if isinstance(value, dict):
            out.update(
                {f"{f.name}:{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)}
            )
    return out


@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_outputs_are_finite(name: str, tiny_setup: TinySetup) -> None:
    res = run_rounds(name, tiny_setup)
    assert all_finite(_state_tensors(res.state))
    for ups in res.uploads:
        assert all(all_finite(u.tensors) for u in ups.values())
    setup = create_algorithm(name).export(res.state)
    assert all_finite(setup.factors) and all_finite(setup.residual)


@pytest.mark.parametrize("name", NAMES)
def test_download_shapes_match_the_client_rank(name: str, tiny_setup: TinySetup) -> None:
    res = run_rounds(name, tiny_setup)
    ranks = {c.cid: c.rank for c in res.clients}
    for payloads in res.payloads:
        for cid, p in payloads.items():
            rank = ranks[cid]
            for key, t in p.tensors.items():
                kind = keys.kind_of(key.split("/", 1)[-1])
                if kind == "lora_A":
                    assert t.shape[0] == rank, key
                elif kind == "lora_B":
                    assert t.shape[1] == rank, key


@pytest.mark.parametrize("name", NAMES)
def test_aggregate_preserves_keys_and_shapes(name: str, tiny_setup: TinySetup) -> None:
    res2 = run_rounds(name, tiny_setup, rounds=2)
    res3 = run_rounds(name, tiny_setup, rounds=3)
    a, b = _state_tensors(res2.state), _state_tensors(res3.state)
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_bitwise_equal_state(name: str, tiny_setup: TinySetup) -> None:
    a = _state_tensors(run_rounds(name, tiny_setup, seed=3).state)
    b = _state_tensors(run_rounds(name, tiny_setup, seed=3).state)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_only_trainable_tensors_change(name: str, tiny_setup: TinySetup) -> None:
    alg = create_algorithm(name)
    model, clients = tiny_setup.model(), tiny_setup.clients()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if "base" in n}
    state = alg.server_init(template(model), clients, tiny_setup.spec, 0)
    c = clients[1] if alg.heterogeneous_ranks else clients[0]
    payload = alg.download(state, c, RoundInfo(1, 0))
    setup, _ = alg.client_init(_ctx(alg, model, payload, c, tiny_setup), {})
    trainable = set(setup.factors) if setup.trainable is None else set(setup.trainable)
    up, _ = client_round(
        alg,
        model,
        tiny_data(24, 1),
        payload,
        {},
        c,
        RoundInfo(1, 0),
        tiny_setup.spec,
        tiny_setup.train,
    )
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n
    for key, t in setup.factors.items():
        if key not in trainable and key in up.tensors:
            assert torch.equal(up.tensors[key], t), key


def _ctx(alg, model, payload, c, setup):  # type: ignore[no-untyped-def]
    from ilora.lora.state import base_weights
    from ilora.types import ClientContext

    return ClientContext(
        c, RoundInfo(1, 0), payload, setup.spec, setup.train, base=base_weights(model)
    )


@pytest.mark.parametrize("name", NAMES)
def test_boundaries_survive_a_numpy_round_trip_bitwise(name: str, tiny_setup: TinySetup) -> None:
    """What Flower's ArrayRecord does to a tensor: to NumPy and back, C-contiguous."""
    res = run_rounds(name, tiny_setup)
    for group in [*res.payloads, *res.uploads]:
        for item in group.values():
            back = {
                k: torch.from_numpy(np.ascontiguousarray(v.numpy()))
                for k, v in item.tensors.items()
            }
            assert all(
                torch.equal(back[k], v) and v.is_contiguous()
                for k, v in canonical(item.tensors).items()
            )
    for cstate in res.cstates.values():
        assert all(v.is_contiguous() or v.numel() == 0 for v in canonical(cstate).values())


FORBIDDEN = {"flwr", "typer", "datasets", "matplotlib", "rich"}


def test_math_packages_import_no_runtime_packages() -> None:
    root = Path(__file__).parents[2] / "src" / "ilora"
    for folder in ("algorithms", "lora"):
        for path in (root / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                )
                for n in names:
                    assert n.split(".")[0] not in FORBIDDEN, f"{path.name} imports {n}"
