"""Registered partitioners: ``PARTITIONERS`` maps a name to an adapter of a pure partitioner.

Each adapter has the common ``Partitioner`` signature, so configs and the CLI select a
partitioner by name; it checks the keyword arguments and calls the pure function of the same
name in ``ilora.data.partition``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy.typing as npt

from ilora.data.partition import IndexArray, _check_1d, by_group, dirichlet, iid, shards
from ilora.registry import Registry

__all__ = ["PARTITIONERS", "Partitioner"]


class Partitioner(Protocol):
    """The common signature every registered partitioner adapter has."""

    def __call__(
        self,
        labels: npt.NDArray[Any],
        groups: npt.NDArray[Any] | None,
        num_clients: int,
        seed: int,
        **kwargs: Any,
    ) -> list[IndexArray]: ...


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


@PARTITIONERS.register("iid")
def _iid_adapter(
    labels: npt.NDArray[Any],
    groups: npt.NDArray[Any] | None,
    num_clients: int,
    seed: int,
    **kwargs: Any,
) -> list[IndexArray]:
    """Adapter for ``iid`` (no keyword arguments)."""
    _options("iid", kwargs, (), ())
    return iid(_check_1d("labels", labels).size, num_clients, seed)


@PARTITIONERS.register("dirichlet")
def _dirichlet_adapter(
    labels: npt.NDArray[Any],
    groups: npt.NDArray[Any] | None,
    num_clients: int,
    seed: int,
    **kwargs: Any,
) -> list[IndexArray]:
    """Adapter for ``dirichlet`` (keywords: ``alpha``, ``min_size``)."""
    opts = _options("dirichlet", kwargs, ("alpha",), ("min_size",))
    return dirichlet(labels, num_clients, seed=seed, **opts)


@PARTITIONERS.register("shards")
def _shards_adapter(
    labels: npt.NDArray[Any],
    groups: npt.NDArray[Any] | None,
    num_clients: int,
    seed: int,
    **kwargs: Any,
) -> list[IndexArray]:
    """Adapter for ``shards`` (keyword: ``shards_per_client``)."""
    opts = _options("shards", kwargs, ("shards_per_client",), ())
    return shards(labels, num_clients, seed=seed, **opts)


@PARTITIONERS.register("by_group")
def _by_group_adapter(
    labels: npt.NDArray[Any],
    groups: npt.NDArray[Any] | None,
    num_clients: int,
    seed: int,
    **kwargs: Any,
) -> list[IndexArray]:
    """Adapter for ``by_group`` (no keyword arguments; needs ``groups``)."""
    _options("by_group", kwargs, (), ())
    if groups is None:
        raise ValueError("groups is None: this task has no natural groups; use dirichlet or iid")
    return by_group(groups, num_clients, seed)
