"""Client state off the heap: the disk store keeps states bit for bit, atomically, and a run
with it (and its resume) is bitwise the in-memory run, for every registered method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference_runs import GROUP
from reference_runs import reference_config
from reference_runs import reference_run

import ilora.algorithms  # noqa: F401
from ilora.algorithms.base import ALGORITHMS
from ilora.engine import checkpoint
from ilora.engine.clientstore import DiskStore
from ilora.engine.clientstore import MemoryStore
from ilora.engine.clientstore import open_store
from ilora.engine.history import RoundRecord
from ilora.engine.simulation import run

pytestmark = GROUP  # the memory runs are test_eval_schedule's every-round runs


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "cv/fc.lora_A": torch.randn(3, 5, generator=g),
        "cv/fc.lora_B": torch.randn(4, 3, generator=g, dtype=torch.float64)[:, :2],  # a view
        "steps": torch.tensor([seed, 7], dtype=torch.int64),
        "half": torch.randn(6, generator=g).to(torch.bfloat16),
    }


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_disk_store_keeps_names_dtypes_shapes_and_bits(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, keep=0)
    assert store[5] == {} and len(store) == 0
    state = _state(1)
    store[5] = state
    back = store[5]
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        assert torch.equal(back[key], value), key
    store[5] = {}  # an empty state removes the client's file
    assert store[5] == {} and _files(tmp_path) == []


def test_disk_store_writes_atomically_and_deletes_what_no_kept_snapshot_names(
    tmp_path: Path,
) -> None:
    store = DiskStore(tmp_path, keep=2)
    store[1], store[2] = _state(1), _state(2)
    first = store.snapshot()  # names 1-0, 2-1
    store[1] = _state(3)  # 1-2 replaces 1-0, which snapshot 1 still names
    assert "1-0.safetensors" in _files(tmp_path)
    store.snapshot()  # snapshots 1 and 2 kept: 1-0 stays
    assert "1-0.safetensors" in _files(tmp_path)
    store.snapshot()  # snapshots 2 and 3 kept: nobody names 1-0 any more
    assert _files(tmp_path) == ["1-2.safetensors", "2-1.safetensors"]
    assert not any(name.endswith(".tmp") for name in _files(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing"):
        DiskStore(tmp_path, 2, first)  # snapshot 1's file 1-0 is gone


def test_disk_store_resumes_from_its_snapshot(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, keep=2)
    store[3] = _state(3)
    index = store.snapshot()
    store[3] = _state(4)  # after the snapshot: a resumed store must not see it
    again = open_store("disk", tmp_path, None, index)
    assert isinstance(again, DiskStore) and list(again) == [3]
    assert torch.equal(again[3]["steps"], _state(3)["steps"])
    with pytest.raises(ValueError, match="run directory"):
        open_store("memory", None, None, index)


def test_memory_store_treats_an_empty_state_as_none() -> None:
    store = MemoryStore({0: {}, 1: _state(1)})
    assert list(store) == [1] and store[0] == {}
    states, index = store.checkpoint()
    assert index is None and list(states) == [1]


def _comparable(records: list[RoundRecord]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.to_json().items() if k != "wall_s"} for r in records]


def _assert_same(a: object, b: object) -> None:
    assert _comparable(a.history.records) == _comparable(b.history.records)  # type: ignore[attr-defined]
    fa, fb = a.setup.factors, b.setup.factors  # type: ignore[attr-defined]
    assert fa.keys() == fb.keys()
    for key, value in fa.items():
        assert torch.equal(fb[key], value), key


@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_every_method_runs_bitwise_the_same_with_its_client_states_on_disk(
    algorithm: str, tmp_path: Path
) -> None:
    disk = run(reference_config(algorithm, "fed.client_store=disk"), store_dir=tmp_path)
    _assert_same(reference_run(algorithm), disk)  # the run with its states in memory


def test_a_disk_store_run_resumes_bitwise_after_a_crash(tmp_path: Path) -> None:
    cfg = reference_config("ilora-s", "fed.client_store=disk", "fed.rounds=4")
    full = run(cfg)
    ckpts = tmp_path / "checkpoints"

    def crash_after_round_3(record: RoundRecord) -> None:
        if record.round == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # round 3's checkpoint is never written
        run(
            cfg,
            on_round=crash_after_round_3,
            on_checkpoint=lambda c: checkpoint.save(ckpts, c),
            store_dir=tmp_path / "states",
        )
    ckpt, _ = checkpoint.load_latest(ckpts)
    assert ckpt is not None and ckpt.round == 2 and ckpt.store == {} and ckpt.store_index
    assert any((tmp_path / "states").rglob("*.safetensors"))  # the states were on disk
    resumed = run(cfg, resume=ckpt, store_dir=tmp_path / "states")
    _assert_same(full, resumed)
