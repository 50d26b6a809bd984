"""The handshake's one-line reasons: a node that is absent, and a node too slow to answer.

A connected node that does not answer within the reply timeout is not a missing SuperNode:
the reason names the timeout and how to raise it, not ``--node-config 'partition-id=...'``.
The grids are in-process (``LocalGrid``); the slow one holds back one node's reply, as the
timeout of a real grid does.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from flwr.app import Message

from ilora import config as config_mod
from ilora.flower import codec
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.handshake import HandshakeError
from ilora.flower.handshake import meet_nodes


class SilentNode(LocalGrid):
    """A ``LocalGrid`` whose node ``silent`` answers after the timeout (its reply is dropped)."""

    def __init__(self, nodes: int, silent: int) -> None:
        super().__init__(make_client_app(), [{"partition-id": i} for i in range(nodes)])
        self.silent = silent

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = super().send_and_receive(messages, timeout=timeout)
        return [r for r in replies if r.metadata.src_node_id != self.silent]


def _meet(grid: LocalGrid, clients: int) -> tuple[dict[int, int], object]:
    cfg = config_mod.load("configs/smoke.yaml", [f"data.num_clients={clients}"])
    text, run = codec.config_to_text(cfg), ("0" * 32, 0)  # a fresh run's key
    return meet_nodes(grid, text, list(range(clients)), 2.5, 0.0, run)


def test_a_node_silent_past_the_timeout_is_named_with_the_timeout_fix() -> None:
    with pytest.raises(HandshakeError) as err:
        _meet(SilentNode(3, silent=2), 3)  # node 2 holds partition-id 1
    assert str(err.value) == (
        "1 connected node(s) did not answer the handshake within the 2.5-s reply timeout, so "
        "client(s) [1] of data.num_clients = 3 have none; raise the timeout (ilora flower "
        "simulate --timeout, or the Flower app's run config timeout)"
    )


def test_an_absent_node_is_named_with_the_supernode_fix() -> None:
    grid = LocalGrid(make_client_app(), [{"partition-id": i} for i in range(2)])
    with pytest.raises(HandshakeError, match=r"no connected node holds client\(s\) \[2\] .*"):
        _meet(grid, 3)


def test_every_node_in_time_meets_every_client() -> None:
    nodes, _ = _meet(SilentNode(4, silent=4), 3)  # the silent node holds no needed client
    assert nodes == {0: 1, 1: 2, 2: 3}
