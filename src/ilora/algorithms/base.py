"""The algorithm interface: four server hooks, four client hooks, capability flags.

An algorithm is a frozen dataclass whose fields are its hyperparameters (each with a help string,
validated in ``__post_init__``); it holds no state. Server state ``S`` is threaded explicitly:
hooks return new values and never mutate their inputs. Client state (``cstate``) is a
``TensorDict`` that lives with the client between its rounds. Only ``engine.local.client_round``
calls the client hooks. LoRA scaling and ranks come from ``LoRASpec``/``ClientInfo``, never from
the algorithm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import ClassVar
from typing import Generic
from typing import TypeVar

from ilora.algorithms.catalog import ALGORITHMS as ALGORITHMS  # re-exported
from ilora.lora.spec import LoRASpec
from ilora.registry import instantiate
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

S = TypeVar("S")
T = TypeVar("T")


class Algorithm(Generic[S]):
    """Base class of every federated LoRA method (see DESIGN.md §4.3)."""

    name: ClassVar[str]
    heterogeneous_ranks: ClassVar[bool] = False  # accepts clients of different ranks
    stateful_clients: ClassVar[bool] = False  # keeps client state across rounds
    personalized: ClassVar[bool] = False  # clients' models differ from the global one
    pooled_data: ClassVar[bool] = False  # one client holding all data (the centralized reference)
    # ``aggregate`` reads the uploads only through their weighted mean Σ_k p_k lift(u_k), all
    # lifted uploads of one set of keys and shapes: robust aggregation may replace that mean
    mean_aggregation: ClassVar[bool] = False
    # the server multiplies uploaded factors (Σ p_k B_k A_k): noise in one factor is scaled by
    # the other, so under DP noise the server clips each noisy update back to dp.clip_norm
    multiplies_uploads: ClassVar[bool] = False

    # ---- server side (pure: return new values, never mutate inputs)
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> S:
        """Return the initial server state.

        Args:
            template: ``<module>.base`` frozen weights ``(d_out, d_in)`` (read-only) and the
                initial head parameters (identical for every client).
            clients: every client of the run (ids, ranks, example counts).
            lora: the LoRA spec (scaling, ranks).
            seed: the run seed; draw randomness with ``ilora.seeding.generator(seed, ...)``.

        """
        raise NotImplementedError

    def download(self, state: S, client: ClientInfo, rnd: RoundInfo) -> Payload:
        """Return what ``client`` receives at the start of round ``rnd`` (per client)."""
        raise NotImplementedError

    def aggregate(self, state: S, uploads: Mapping[int, Upload], rnd: RoundInfo) -> S:
        """Return the new state from the uploads of the clients that succeeded (keyed by cid)."""
        raise NotImplementedError

    def export(self, state: S) -> LocalSetup:
        """Return the global model (factors, residual, head) for evaluation and checkpoints."""
        raise NotImplementedError

    def lift(self, state: S, tensors: TensorDict) -> TensorDict:
        """Return an upload as the full-rank upload that adds the same term to the mean.

        Read only when ``mean_aggregation`` is set: such an ``aggregate`` must depend on the
        uploads only through ``Σ_k p_k lift(u_k)`` (``p_k`` the normalised weights), and
        ``lift`` must leave a lifted upload unchanged, so that giving every client the same
        lifted tensors ``c`` aggregates exactly ``c`` (``engine.robust``). Default: unchanged
        (every upload already has the one shape, e.g. a single rank).
        """
        return dict(tensors)

    def round_metrics(self, state: S) -> dict[str, float]:
        """Return diagnostics of the last aggregation (``agg_error``); reporting only.

        Default: a copy of the state's ``metrics`` field, where the last ``aggregate`` puts
        them; ``{}`` for a state without one.
        """
        return dict(getattr(state, "metrics", {}))

    def start_gradient_batches(self) -> int | None:
        """Return how many local batches the loop averages into ``ctx.start_grad`` before training.

        ``None`` (the default) skips it; ``0`` means one pass over all local data.
        """
        return None

    def backbone_feature_batches(self, ctx: ClientContext, cstate: TensorDict) -> int | None:
        """Return how many local batches the loop passes through the frozen backbone first.

        Called at the start of a client's round, before ``client_init``: for ``n`` the loop
        removes every adapter and residual, runs ``n`` seeded batches (``0``: one pass over all
        local data) in eval mode and sets ``ctx.features`` to the inputs of the head and their
        labels. ``None`` (the default) skips it; ``cstate`` lets a method ask only once.
        """
        return None

    # ---- client side (called only by engine.local.client_round)
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        """Return the local starting point and the client state. Default: the payload as factors."""
        return LocalSetup(factors=dict(ctx.payload.tensors)), cstate

    def loss_term(
        self, params: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> torch.Tensor | None:
        """Return an extra loss added to the task loss (proximal terms); default none."""
        return None

    def grad_transform(
        self, grads: TensorDict, params: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> TensorDict:
        """Return the gradients the optimizer uses (control variates, sketches); default: as is."""
        return grads

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        """Return what the client sends and its new state. Default: all trained tensors."""
        return Upload(tensors=dict(trained), weight=float(ctx.client.num_examples)), cstate


register = ALGORITHMS.register  # checked against the name table in .catalog


def create_algorithm(name: str, args: Mapping[str, object] | None = None) -> Algorithm:  # type: ignore[type-arg]
    """Return the algorithm registered as ``name`` with its preset and ``args`` applied.

    Raises:
        UnknownNameError: for an unknown name (with a did-you-mean).
        ValueError: for an unknown hyperparameter (naming the valid ones) or an invalid value.

    """
    cls = ALGORITHMS.get(name)
    kwargs = {**ALGORITHMS.preset(name), **dict(args or {})}
    algorithm: Algorithm = instantiate(cls, kwargs, f"algorithm {name!r}")  # type: ignore[type-arg]
    return algorithm


# where a hyperparameter's default comes from: its field's metadata["source"], one of these (a
# contract test checks every registered algorithm; "ours" needs a help that says why)
SOURCES = {
    "paper": "the paper's stated value",
    "code": "the authors' released code (the paper silent or different)",
    "ours": "this project's choice where the paper is silent, or its improvement (help says why)",
    "engine": "a knob of this project with no counterpart in the paper",
}


def hyperparameter(default: T, source: str, help: str) -> T:
    """Return a hyperparameter's dataclass field: its ``default``, ``source`` and ``help``.

    ``source`` is one of :data:`SOURCES`; the contract test checks both for every algorithm.
    """
    return dataclasses.field(default=default, metadata={"help": help, "source": source})


def check_at_least(algorithm: object, **bounds: float) -> None:
    """Raise for the first hyperparameter named in ``bounds`` that is below its bound.

    Raises:
        ValueError: ``"<name> must be >= <bound>, got <value>"``.

    """
    for name, bound in bounds.items():
        value = getattr(algorithm, name)
        if value < bound:
            raise ValueError(f"{name} must be >= {bound}, got {value}")


def hyperparameter_source(cls: type) -> dict[str, str]:
    """Return ``{field: source}`` of an algorithm class, ``""`` where a field records none."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: str(f.metadata.get("source", "")) for f in dataclasses.fields(cls) if f.init}


def hyperparameter_help(cls: type) -> dict[str, str]:
    """Return ``{field: help}`` for an algorithm class (the contract test checks every field)."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}
