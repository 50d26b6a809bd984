"""Every client's share of a dataset, held as indices, and how a client's test share is cut.

``Shares`` builds a client's dataset only when it is asked for, so a run with many clients holds
one index array rather than a dataset per client; ``split_local`` holds out a client's own test
share; ``total_size`` counts examples without building the shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import overload

from ilora.config import ConfigError
from ilora.seeding import np_rng
from ilora.tasks.base import ArrayDataset

if TYPE_CHECKING:
    import numpy as np


class Shares(Sequence[ArrayDataset]):
    """Every client's examples of one dataset, each built when it is asked for.

    Holds the clients' indices in one array (``offsets[k]:offsets[k + 1]`` are client ``k``'s),
    so 100,000 clients cost 8 bytes per example and per client, not a dataset object each;
    ``shares[k]`` is ``dataset.subset`` of those indices, the same tensors every time.
    """

    def __init__(self, dataset: ArrayDataset, parts: Sequence[np.ndarray]) -> None:
        import numpy as np

        self.dataset = dataset
        self.sizes = np.array([len(p) for p in parts], dtype=np.int64)  # (K,)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])  # (K + 1,)
        empty = np.zeros(0, dtype=np.int64)
        self.flat = np.concatenate([empty, *(np.asarray(p, dtype=np.int64) for p in parts)])

    def __len__(self) -> int:
        return len(self.sizes)

    @overload
    def __getitem__(self, k: int) -> ArrayDataset: ...
    @overload
    def __getitem__(self, k: slice) -> Sequence[ArrayDataset]: ...
    def __getitem__(self, k: int | slice) -> ArrayDataset | Sequence[ArrayDataset]:
        if isinstance(k, slice):
            return [self[i] for i in range(len(self))[k]]
        k = range(len(self))[k]  # negative ids and IndexError as a list
        return self.dataset.subset(self.flat[self.offsets[k] : self.offsets[k + 1]])


def total_size(datasets: Sequence[ArrayDataset]) -> int:
    """Return the number of examples in ``datasets`` (without building lazy ``Shares``)."""
    if isinstance(datasets, Shares):
        return int(datasets.sizes.sum())
    return sum(len(d) for d in datasets)


def split_local(
    idx: np.ndarray, fraction: float, seed: int, cid: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train, test)`` indices of one client: a seeded ``fraction`` held out as its test.

    Raises:
        ConfigError: if the client would keep no training example.

    """
    import numpy as np

    if fraction == 0.0:
        return idx, idx[:0]
    order = np_rng(seed, "local-test", cid).permutation(len(idx))
    n_test = int(round(fraction * len(idx)))
    if n_test >= len(idx):
        raise ConfigError(
            f"client {cid} has {len(idx)} examples: data.local_test_fraction "
            f"{fraction} leaves none for training; lower it"
        )
    return np.sort(idx[order[n_test:]]), np.sort(idx[order[:n_test]])
