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
the stopped run's reason, or None). The engine then has :data:`GRACE_S` seconds to stop by
itself (nothing in flight: Ray shuts down as usual); if it does not, :func:`run` says so and
the caller ends the process with :func:`ilora.flower.lifetime.exit_now`, which kills Ray's
processes first. A Ctrl-C while the run goes on ends the process that way at once (code 130).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from ilora.flower.lifetime import exit_now

GRACE_S = 5.0  # seconds the engine gets to stop once the ServerApp has ended
Report = Callable[[str | None], None]


@dataclass(frozen=True)
class Ended:
    """How a simulation ended.

    Attributes:
        served: the ServerApp reported its end (the run directory is written).
        reason: the stopped run's one-line reason (None: it finished, or was not served).
        stuck: the engine still waits on ClientApp calls in flight; end the process.

    """

    served: bool
    reason: str | None
    stuck: bool

    def verdict(self, directory: Path) -> tuple[int, str]:
        """Return the exit code (0 done, 1 no result, 3 stopped) and the one line to print."""
        if self.reason is not None:
            return 3, f"run failed: {self.reason}"
        if not self.served or not (directory / "summary.json").is_file():
            return 1, f"error: the simulation ended without a result in {directory}"
        return 0, f"written: {directory}/summary.json, history.jsonl"


def ray_backend(cpus: int, dashboard: bool) -> dict[str, Any]:
    """Return the Ray backend: one CPU per ClientApp and ``cpus`` in all (0: Ray's count).

    The dashboard, when asked for, listens on 127.0.0.1 only.
    """
    init_args: dict[str, int | bool | str] = {"include_dashboard": dashboard}
    if dashboard:
        init_args["dashboard_host"] = "127.0.0.1"
    if cpus:
        init_args["num_cpus"] = cpus
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args}


def run(
    server_app: Callable[[Report], ServerApp],
    client_app: ClientApp,
    num_supernodes: int,
    backend_config: dict[str, Any],
    grace: float = GRACE_S,
) -> Ended:
    """Run ``server_app(report)`` and ``client_app`` on the Simulation Engine; return its end.

    Raises:
        BaseException: whatever ``run_simulation`` raised (a ServerApp that crashed).

    """
    from flwr.simulation import run_simulation

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
        return Ended(served=False, reason=None, stuck=False)
    try:
        _, error = events.get(timeout=grace)
    except queue.Empty:
        return Ended(served=True, reason=value, stuck=True)
    if error is not None:
        raise error
    return Ended(served=True, reason=value, stuck=False)
