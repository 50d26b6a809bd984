"""``LocalGrid``: a Flower ``Grid`` that delivers messages to ``ClientApp``s in this process.

Each node is a ``ClientApp`` with its own ``Context`` (node config and persistent state), as on
a SuperNode; messages and replies are real Flower ``Message``s, and a ``ClientApp`` exception
becomes an error reply, as on a SuperNode. Only the transport is missing: no network, no
serialization. The parity tests run the strategy over it; it is also the quickest way to debug
an app before starting a SuperLink. ``PollingGrid`` wraps the ServerApp's grid so that a
round's replies are collected when they arrive rather than on flwr's ticks (3 s on the
deployment's grid, 0.1 s on the Simulation Engine's).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from collections.abc import Mapping

from flwr.app import Context
from flwr.app import Error
from flwr.app import Message
from flwr.app import RecordDict
from flwr.app import UserConfigValue
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

CLIENT_EXCEPTION = 1002  # error code of a reply whose ClientApp raised


class _MessageGrid(Grid):
    """A ``Grid`` with Flower's own ``create_message``, for both grids here.

    Flower 1.42 deprecates ``Grid.create_message`` (build a ``Message`` instead) yet keeps it
    abstract; every Flower grid implements it as this same ``Message(...)``, and nothing in
    ILoRA calls it.
    """

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)


class LocalGrid(_MessageGrid):
    """Nodes ``1..N``, one per node config (each with a ``partition-id``), one shared app."""

    def __init__(self, app: ClientApp, node_configs: Iterable[Mapping[str, UserConfigValue]]):
        self.app = app
        self.contexts = {
            nid: Context(
                run_id=1, node_id=nid, node_config=dict(cfg), state=RecordDict(), run_config={}
            )
            for nid, cfg in enumerate(node_configs, start=1)
        }
        self.replies: dict[str, Message] = {}
        self._run = Run.create_empty(run_id=1)
        if TaskIdentity._run_id is None:  # outside a ServerApp process: we are the server task
            TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = (
                1,
                SUPERLINK_NODE_ID,
                0,
            )

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg_id = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = msg_id
            self.replies[msg_id] = self._deliver(msg)
            ids.append(msg_id)
        return ids

    def _deliver(self, msg: Message) -> Message:
        context = self.contexts[msg.metadata.dst_node_id]
        try:
            return self.app(msg, context)
        except Exception as err:  # noqa: BLE001  (a crashed ClientApp replies with an error)
            return Message(Error(CLIENT_EXCEPTION, f"{type(err).__name__}: {err}"), reply_to=msg)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def poll_interval(grid: Grid) -> float:
    """Return how often to ask ``grid`` for replies: 0.1 s, 5 ms in process.

    A pull from the deployment's grid is a call to the SuperLink; one from the Simulation
    Engine's (flwr's ``InMemoryGrid``, in the ServerApp's own process) reads a dict.
    """
    from flwr.superlink.grid import InMemoryGrid

    return 0.005 if isinstance(grid, InMemoryGrid) else 0.1


class PollingGrid(_MessageGrid):
    """Another ``Grid`` whose ``send_and_receive`` asks for replies every ``interval`` s.

    flwr 1.42's deployment grid asks the SuperLink every 3 s, so a round that is ready after
    0.2 s waits until the next 3-s tick; this wrapper pulls as often as ``interval`` (default:
    :func:`poll_interval`) and otherwise delegates every call to the wrapped grid.
    """

    def __init__(self, grid: Grid, interval: float | None = None) -> None:
        self.grid = grid
        self.interval = poll_interval(grid) if interval is None else interval

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            got = list(self.pull_messages(waiting))
            replies += got
            waiting -= {m.metadata.reply_to_message_id for m in got}
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.interval)
        return replies
