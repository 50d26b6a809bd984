"""Registered clients cost no per-round work: a round touches the sampled clients only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ilora import config
from ilora.engine.clientstore import DiskStore
from ilora.engine.sampling import sample_clients
from ilora.engine.setup import build
from ilora.engine.shares import Shares
from ilora.engine.shares import total_size
from ilora.engine.simulation import run
from ilora.tasks.base import ArrayDataset
from ilora.types import TensorDict

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def test_shares_build_each_clients_examples_on_demand() -> None:
    data = ArrayDataset({"x": torch.arange(20.0).reshape(10, 2)}, torch.arange(10))
    parts = [np.array([3, 1]), np.array([], dtype=np.int64), np.array([9, 0, 4])]
    shares = Shares(data, parts)
    assert len(shares) == 3 and total_size(shares) == 5
    for got, idx in zip(shares, parts, strict=True):
        want = data.subset(idx)
        assert torch.equal(got.inputs["x"], want.inputs["x"])
        assert torch.equal(got.labels, want.labels)
    assert torch.equal(shares[-1].labels, torch.tensor([9, 0, 4]))
    with pytest.raises(IndexError):
        shares[3]


def test_sampling_a_range_draws_the_same_clients_as_the_list() -> None:
    for n, fraction in ((10, 0.5), (20_000, 0.001), (50_000, 0.0002)):
        for rnd in (1, 2):
            assert sample_clients(range(n), fraction, 3, rnd) == sample_clients(
                list(range(n)), fraction, 3, rnd
            )


def _round_work(n: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, int]:
    """Return the datasets built and the client states read in 2 rounds with ``n`` clients."""
    cfg = config.load(
        SMOKE,
        [
            "algorithm=ilora-s",
            f"task_args.n_train={4 * n}",
            f"data.num_clients={n}",
            "data.partition=iid",
            "data.partition_args={}",
            f"fed.fraction={3 / n}",
            "fed.client_store=disk",
            "eval.subset=16",
            "eval.final_full=false",
        ],
    )
    exp = build(cfg)
    assert isinstance(exp.shares, Shares)
    built, reads = [0], [0]
    subset, load = ArrayDataset.subset, DiskStore.__getitem__

    def counting_subset(self: ArrayDataset, idx: np.ndarray) -> ArrayDataset:
        built[0] += 1
        return subset(self, idx)

    def counting_load(self: DiskStore, cid: int) -> TensorDict:
        reads[0] += 1
        return load(self, cid)

    with monkeypatch.context() as patch:
        patch.setattr(ArrayDataset, "subset", counting_subset)
        patch.setattr(DiskStore, "__getitem__", counting_load)
        run(cfg, exp=exp, store_dir=tmp_path / str(n))
    return built[0], reads[0]


def test_a_round_costs_the_same_with_50_or_2000_registered_clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    small = _round_work(50, monkeypatch, tmp_path)
    large = _round_work(2000, monkeypatch, tmp_path)
    # 3 sampled clients x 2 rounds, each state read for the turn and for the round's views
    # (download_error: the sampled clients' next start), never the other registered clients'
    assert small == large and small[1] == 12
