"""Registered partitioners: ``PARTITIONERS`` maps a name to a ``Partitioner`` (one table).

Every ``Partitioner`` has the common call signature, so configs and the CLI select a
partitioner by name; it checks the keyword arguments and calls the pure function of the same
name in ``ilora.data.partition`` (``dirichlet-clients``: ``dirichlet_clients`` in
``ilora.data.partition_clients``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from ilora.data.partition import IndexArray
from ilora.data.partition import _check_1d
from ilora.data.partition import by_group
from ilora.data.partition import dirichlet
from ilora.data.partition import iid
from ilora.data.partition import shards
from ilora.data.partition_clients import dirichlet_clients
from ilora.registry import Registry

__all__ = ["PARTITIONERS", "Partitioner"]


# how a partitioner calls its pure function: (labels, groups, num_clients, seed, checked keywords)
Call = Callable[
    [npt.NDArray[Any], npt.NDArray[Any] | None, int, int, dict[str, Any]], list[IndexArray]
]


@dataclass(frozen=True)
class Partitioner:
    """A registered partitioner: checks its keyword arguments, then calls its pure function."""

    name: str
    call: Call
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def __call__(
        self,
        labels: npt.NDArray[Any],
        groups: npt.NDArray[Any] | None,
        num_clients: int,
        seed: int,
        **kwargs: Any,
    ) -> list[IndexArray]:
        opts = _options(self.name, kwargs, self.required, self.optional)
        return self.call(labels, groups, num_clients, seed, opts)


PARTITIONERS: Registry[Partitioner] = Registry("partitioner")


# ---------------------------------------------------------------------------------------------
# Registry adapters (common signature; keyword arguments pass through)


def _options(
    name: str, kwargs: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, Any]:
    accepted = required + optional
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ValueError(
            f"partitioner {name!r} got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"accepted: {allowed}"
        )
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise ValueError(f"partitioner {name!r} needs keyword argument(s) {', '.join(missing)}")
    return dict(kwargs)


def _natural_groups(groups: npt.NDArray[Any] | None) -> npt.NDArray[Any]:
    if groups is None:
        raise ValueError("groups is None: this task has no natural groups; use dirichlet or iid")
    return groups


for _partitioner in (
    Partitioner(
        "iid", lambda labels, _, n, seed, o: iid(_check_1d("labels", labels).size, n, seed)
    ),
    Partitioner(
        "dirichlet",
        lambda labels, _, n, seed, opts: dirichlet(labels, n, seed=seed, **opts),
        ("alpha",),
        ("min_size",),
    ),
    Partitioner(
        "dirichlet-clients",
        lambda labels, _, n, seed, opts: dirichlet_clients(labels, n, seed=seed, **opts),
        ("alpha",),
        ("min_size",),
    ),
    Partitioner(
        "shards",
        lambda labels, _, n, seed, opts: shards(labels, n, seed=seed, **opts),
        ("shards_per_client",),
    ),
    Partitioner(
        "by_group", lambda _, groups, n, seed, o: by_group(_natural_groups(groups), n, seed)
    ),
):
    PARTITIONERS.register(_partitioner.name)(_partitioner)
