"""A node's client-state files: the state as of a round, retention, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ilora.engine import serial
from ilora.flower.nodestate import KEEP_ROUNDS
from ilora.flower.nodestate import NodeState
from ilora.flower.nodestate import NodeStateError

RUN = "0123456789abcdef" * 2


def _state(rnd: int) -> dict[str, torch.Tensor]:
    return {"cv/x": torch.full((2, 3), float(rnd)), "local/y": torch.arange(4, dtype=torch.int64)}


def _value(state: dict[str, torch.Tensor]) -> float:
    return float(state["cv/x"][0, 0]) if state else -1.0


def test_the_state_as_of_a_round_is_the_newest_file_not_after_it(tmp_path: Path) -> None:
    node = NodeState(tmp_path, RUN, 3)
    node.start()
    assert node.load(5) == {}  # never trained: the empty state
    node.save(1, {})  # still empty: no file
    assert node.rounds() == []
    for rnd in (2, 5, 6):  # the rounds the client was sampled in
        node.save(rnd, _state(rnd))
    node.save(7, {})  # empty again: a file, or round 7 would read round 6's
    got = [_value(node.load(q)) for q in range(1, 9)]
    assert got == [-1.0, 2.0, 2.0, 2.0, 5.0, 6.0, -1.0, -1.0]
    loaded = node.load(6)
    assert loaded["local/y"].dtype == torch.int64 and torch.equal(loaded["cv/x"], _state(6)["cv/x"])


def test_old_files_go_but_every_round_a_resume_can_need_stays(tmp_path: Path) -> None:
    node = NodeState(tmp_path, RUN, 0)
    node.start()
    for rnd in range(1, 11):
        node.save(rnd, _state(rnd))
        for q in range(max(0, rnd - KEEP_ROUNDS), rnd + 1):  # the server keeps 2 checkpoints
            assert _value(node.load(q)) == (q if q else -1.0)
    assert node.rounds() == list(range(10 - KEEP_ROUNDS, 11))
    with pytest.raises(NodeStateError, match=r"only as of round 7 and later, not as of round 3"):
        NodeState(tmp_path, RUN, 0).resume(3)


def test_resuming_drops_the_rounds_the_server_redoes(tmp_path: Path) -> None:
    node = NodeState(tmp_path, RUN, 1)
    node.start()
    for rnd in (1, 2, 3):
        node.save(rnd, _state(rnd))
    again = NodeState(tmp_path, RUN, 1)  # a new process of the same node
    again.resume(2)
    assert again.rounds() == [1, 2] and _value(again.load(5)) == 2.0
    again.resume(0)  # a fresh run under the same key: nothing kept
    assert again.rounds() == [] and again.load(5) == {}


def test_a_node_refuses_what_it_cannot_restore_or_trust(tmp_path: Path) -> None:
    with pytest.raises(NodeStateError, match=r"client 4 has no saved state of run .* round 2"):
        NodeState(tmp_path, RUN, 4).resume(2)
    with pytest.raises(ValueError, match="not 32 hex digits"):
        NodeState(tmp_path, "../../etc", 4)
    node = NodeState(tmp_path, RUN, 4)
    node.start()
    other = {"run": RUN, "cid": 5, "round": 1, "state": _state(1)}  # another client's file
    node.path(1).write_bytes(serial.dumps(other))
    with pytest.raises(NodeStateError, match="another run's or client's state"):
        node.load(1)
    node.path(1).write_bytes(b"\x80\x04pickle")
    with pytest.raises(NodeStateError, match="is unreadable"):
        node.load(1)
