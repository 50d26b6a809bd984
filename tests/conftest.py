"""Shared fixtures: a hand-built tiny MLP, tiny client data, and a two-round driver."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from dataclasses import field

import pytest
import torch
from torch import nn

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny tensors: one thread is much faster than two fighting over microsecond-sized kernels, in
# this process and in the ones the tests start (they inherit the variable; on 2 busy cores a
# tiny-text run in a subprocess spends a third of its CPU time in a second, spinning thread).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

import ilora.algorithms  # noqa: E402,F401
from ilora.algorithms.base import Algorithm  # noqa: E402
from ilora.algorithms.base import create_algorithm  # noqa: E402
from ilora.config import TrainConfig  # noqa: E402
from ilora.engine.local import client_round  # noqa: E402
from ilora.engine.turn import canonical_payload  # noqa: E402
from ilora.engine.turn import canonical_upload  # noqa: E402
from ilora.lora.inject import inject  # noqa: E402
from ilora.lora.spec import LoRASpec  # noqa: E402
from ilora.lora.state import template  # noqa: E402
from ilora.seeding import generator  # noqa: E402
from ilora.tasks.base import ArrayDataset  # noqa: E402
from ilora.types import ClientInfo  # noqa: E402
from ilora.types import Payload  # noqa: E402
from ilora.types import RoundInfo  # noqa: E402
from ilora.types import TensorDict  # noqa: E402
from ilora.types import Upload  # noqa: E402


class TinyMLP(nn.Module):
    """x (B, 6) -> fc1 (8) -> relu -> fc2 (8) -> classifier (3); weights from a seeded generator."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.fc1, self.fc2, self.classifier = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        g = generator(seed, "tiny-mlp")
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def tiny_data(n: int, seed: int) -> ArrayDataset:
    g = generator(seed, "tiny-data")
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # 3 classes
    return ArrayDataset({"x": x}, y)


@dataclass
class TinySetup:
    spec: LoRASpec
    ranks: list[int]
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=3, batch_size=8, lr=0.05, head_lr=0.05)
    )

    def model(self) -> nn.Module:
        m = TinyMLP()
        inject(m, self.spec, [r"^fc\d$"], head=[r"^classifier\."])
        return m

    def clients(self) -> list[ClientInfo]:
        return [ClientInfo(i, r, 16 + 8 * i) for i, r in enumerate(self.ranks)]


@pytest.fixture
def tiny_setup() -> TinySetup:
    return TinySetup(LoRASpec(alpha=4.0), [2, 4, 3])


@dataclass
class TwoRounds:
    state: object
    payloads: list[dict[int, Payload]]
    uploads: list[dict[int, Upload]]
    cstates: dict[int, TensorDict]
    clients: list[ClientInfo]


def run_rounds(
    name: str | Algorithm,  # type: ignore[type-arg]
    setup: TinySetup,
    seed: int = 0,
    rounds: int = 2,
) -> TwoRounds:
    """Drive ``rounds`` rounds of ``name`` (or an algorithm instance) on the tiny MLP, every
    client every round."""
    alg = name if isinstance(name, Algorithm) else create_algorithm(name)
    ranks = setup.ranks if alg.heterogeneous_ranks else [setup.ranks[0]] * len(setup.ranks)
    setup = TinySetup(setup.spec, ranks, setup.train)
    model, clients = setup.model(), setup.clients()
    if alg.pooled_data:  # one client holding everything, as the engine runs it
        clients = [ClientInfo(0, max(ranks), sum(c.num_examples for c in clients))]
    state = alg.server_init(template(model), clients, setup.spec, seed)
    store: dict[int, TensorDict] = {c.cid: {} for c in clients}
    pays, ups = [], []
    for r in range(1, rounds + 1):
        rnd, payloads, uploads = RoundInfo(r, seed), {}, {}
        for c in clients:
            payloads[c.cid] = canonical_payload(alg.download(state, c, rnd))
            data = tiny_data(c.num_examples, seed * 100 + c.cid)
            up, store[c.cid] = client_round(
                alg, model, data, payloads[c.cid], store[c.cid], c, rnd, setup.spec, setup.train
            )
            uploads[c.cid] = canonical_upload(up, "examples")
        state = alg.aggregate(state, uploads, rnd)
        pays.append(payloads)
        ups.append(uploads)
    return TwoRounds(state, pays, ups, store, clients)


def assert_rejected(name: str, *bad: dict[str, object]) -> None:
    """Check that each set of ``bad`` hyperparameters makes algorithm ``name`` refuse to be made.

    The refusal is a ``ValueError`` naming the set's first key (the field it checks).
    """
    for args in bad:
        with pytest.raises(ValueError, match=next(iter(args))):
            create_algorithm(name, args)


class OneLayerNet(nn.Module):
    """``head(relu(l(x)))`` with ``l: 6 -> 5``, ``head: 5 -> 3``, seeded N(0, 0.25) weights."""

    def __init__(self) -> None:
        super().__init__()
        self.l, self.head = nn.Linear(6, 5), nn.Linear(5, 3)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.l(x)))


def one_layer_net(spec: LoRASpec) -> nn.Module:
    """Return :class:`OneLayerNet` with LoRA on ``l`` and ``head`` as the trained head."""
    model = OneLayerNet()
    inject(model, spec, [r"^l$"], head=[r"^head\."])
    return model


# ---- running on several cores (pytest-xdist, `make test`: -n 2 --dist loadgroup)


def _xdist_groups(item: pytest.Item) -> list[str]:
    marks = item.iter_markers("xdist_group")
    return sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks})


def _name_the_group(item: pytest.Item, groups: list[str]) -> None:
    """Suffix the node id with ``@group``, what ``--dist loadgroup`` schedules by.

    pytest-xdist 3.8 sets ``item._nodeid``, which pytest 9.1+ no longer reads (node ids became
    structured), so its groups are silently ignored; this sets the id pytest reads instead.
    """
    from _pytest.nodeid import NodeId

    item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


def _unit(item: pytest.Item) -> str:
    """Return what ``--dist loadgroup`` hands out whole: the item's xdist group, or the item."""
    return "_".join(_xdist_groups(item)) or item.nodeid


@pytest.hookimpl(trylast=True)  # after xdist's own hook, so a working xdist is left alone
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep what xdist must not split together, and hand out the biggest slow units first.

    A test that uses a module-scoped fixture joins its module's xdist group, so the fixture is
    built once, on one worker. On an xdist worker the units (a group, or a test of no group)
    are ordered by their number of ``slow`` tests, most first (stably; xdist hands units out in
    collection order): the longest ones start at once, one per worker, and never start last
    while the other core sits idle.
    """
    if not hasattr(config, "workerinput"):
        return
    loadgroup = config.getoption("loadgroup", False)
    if loadgroup:
        for item in items:
            fixturedefs = item._fixtureinfo.name2fixturedefs  # pytest has no public accessor
            if any(defs[-1].scope == "module" for defs in fixturedefs.values()):
                item.add_marker(pytest.mark.xdist_group(item.nodeid.partition("::")[0]))
    slow = Counter(_unit(item) for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[_unit(item)])
    if not loadgroup:
        return
    for item in items:
        groups = _xdist_groups(item)
        if groups and "@" not in item.nodeid.rpartition("]")[2]:
            _name_the_group(item, groups)
