"""Flower's Simulation Engine, run until the ServerApp has ended (``ilora flower simulate``).

flwr 1.42's ``run_simulation`` returns only once every ClientApp call in flight has returned:
each of its worker threads waits on its Ray actor's result without a time limit
(``flwr/server/superlink/fleet/vce/vce_api.py:132`` ->
``flwr/server/superlink/fleet/vce/backend/raybackend.py:182`` ->
``flwr/simulation/ray_transport/ray_actor.py:481``, ``ray.get(future)``). So when the ServerApp
stopped waiting while a virtual SuperNode still computed (a handshake or a round past
``--timeout``, then a failed run), the command printed its reason and then hung for as long as
that call took.

Here the engine runs in a thread and the ServerApp reports its end (its ``report`` callback:
the stopped run's reason, or None). Its run directory is then written and nothing the engine
still does matters, so :func:`run` returns at once and the caller ends the process with
:func:`ilora.flower.lifetime.exit_now`, which kills Ray's processes first: it neither waits
for ClientApp calls in flight nor for Ray's orderly shutdown (seconds of stopping actors and
servers of a cluster that is thrown away). A Ctrl-C while the run goes on ends the process
that way at once (code 130).

Messages reach the virtual SuperNodes sooner than flwr's own tick: flwr 1.42's Simulation
Engine moves the ServerApp's messages to its worker threads every 0.1 s
(``vce_api.add_messages_to_queue``, ``f_stop.wait(0.1)``), so a round's train and evaluate
messages waited 0.05 s each on average; :func:`quick_dispatch` makes that tick
:data:`DISPATCH_TICK_S` (only on the pinned flwr, whose function it replaces).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from ilora.flower import FLWR_VERSION
from ilora.flower.lifetime import exit_now

DISPATCH_TICK_S = 0.005  # seconds between two looks for the ServerApp's new messages
Report = Callable[[str | None], None]


@dataclass(frozen=True)
class Ended:
    """How a simulation ended.

    Attributes:
        served: the ServerApp reported its end (the run directory is written).
        reason: the stopped run's one-line reason (None: it finished, or was not served).

    """

    served: bool
    reason: str | None

    def verdict(self, directory: Path) -> tuple[int, str]:
        """Return the exit code (0 done, 1 no result, 3 stopped) and the one line to print."""
        if self.reason is not None:
            return 3, f"run failed: {self.reason}"
        if not self.served or not (directory / "summary.json").is_file():
            return 1, f"error: the simulation ended without a result in {directory}"
        return 0, f"written: {directory}/summary.json, history.jsonl"


def run(
    server_app: Callable[[Report], ServerApp],
    client_app: ClientApp,
    num_supernodes: int,
    backend_config: dict[str, Any],
) -> Ended:
    """Run ``server_app(report)`` and ``client_app`` on the Simulation Engine; return its end.

    Returns as soon as the ServerApp has reported (``served``: end the process with
    ``exit_now``, Ray still runs) or the engine has stopped before that.

    Raises:
        BaseException: whatever ``run_simulation`` raised (a ServerApp that crashed).

    """
    from flwr.simulation import run_simulation

    quick_dispatch()
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    app = server_app(lambda reason: events.put(("served", reason)))

    def engine() -> None:
        try:
            run_simulation(
                app, client_app, num_supernodes=num_supernodes, backend_config=backend_config
            )
        except BaseException as err:  # noqa: BLE001  (raised again in the caller's thread)
            events.put(("stopped", err))
        else:
            events.put(("stopped", None))

    threading.Thread(target=engine, name="flower-simulation", daemon=True).start()
    try:
        kind, value = events.get()
    except KeyboardInterrupt:  # Ctrl-C: flwr's threads would keep the process alive
        exit_now(130)
    if kind == "stopped":  # before the ServerApp reported: it never ran to its end
        if value is not None:
            raise value
        return Ended(served=False, reason=None)
    return Ended(served=True, reason=value)


def quick_dispatch(tick: float = DISPATCH_TICK_S) -> None:
    """Have flwr's Simulation Engine look for new messages every ``tick`` s (flwr 1.42.0 only).

    Replaces ``vce_api.add_messages_to_queue`` (which ``vce_api.run_api`` calls by name) by
    :func:`_dispatch`, the same loop with a shorter wait. Another flwr keeps its own.
    """
    import flwr
    from flwr.server.superlink.fleet.vce import vce_api

    if flwr.__version__ == FLWR_VERSION and hasattr(vce_api, "add_messages_to_queue"):
        vce_api.add_messages_to_queue = functools.partial(_dispatch, tick=tick)


def _dispatch(
    state: Any,
    messages: queue.Queue[Any],
    nodes: dict[int, int],
    stop: threading.Event,
    tick: float,
) -> None:
    """Queue each node's next pending message (one per node per look) until ``stop`` is set."""
    while not stop.is_set():
        for node_id in nodes:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                messages.put(message)
        stop.wait(tick)
