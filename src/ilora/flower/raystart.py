"""Ray for ``ilora flower simulate``, started early and with its ClientApp workers warm.

Left to itself, flwr 1.42's Simulation Engine starts Ray only once the driver has imported
everything (``RayBackend.init_ray``), and each Ray actor pays, at its first message, the import
of ``ilora.flower.client`` (torch, flwr) and then the build of the experiment (the task's model
code imports transformers): seconds that follow Ray's own start-up one after the other.

Here the command starts Ray itself, in a thread, as soon as it knows the experiment
(:class:`RayStart`), while the driver goes on importing; flwr finds Ray running and uses it.
The arguments are flwr's (``init_args`` with flwr's defaults ``logging_level="WARNING"``,
``log_to_driver=True``; ``PYTHONPATH`` passed to the workers), plus Ray's
``worker_process_setup_hook``: every Ray worker of the run, the ones Ray prestarts for the
actors included, first runs :func:`warm_worker`, which imports the ClientApp and builds the
experiment of the YAML the server will send in its handshake (``ilora.flower.client.experiment``,
cached per process and keyed by that text). A worker so warms up while Ray and the driver are
still starting, and its actor's handshake finds the experiment built. The cached experiment is
the one the handshake would have built (same function, same text, no client state), so the
results are unchanged; a text that differs (none should) is a cache miss, built at the
handshake as before. Ray's workers prestarted for the first driver are switched off
(``prestart_worker_first_driver``): flwr's actors never land on them (Ray starts a worker of
their own), so they were two more Python processes starting beside the run's, and would warm
up for nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

WARM_ENV = "ILORA_WARM_EXPERIMENT"  # the worker's environment: the experiment YAML to build
HOOK = "ilora.flower.raystart.warm_worker"


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


def init_kwargs(backend: dict[str, Any], yaml_text: str) -> dict[str, Any]:
    """Return ``ray.init``'s arguments: flwr 1.42's for ``backend``, and the warm-up hook."""
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    kwargs.update(backend["init_args"])
    pythonpath = os.pathsep.join(sys.path)  # as flwr: the driver's path, then PYTHONPATH
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    env_vars = {"PYTHONPATH": pythonpath, WARM_ENV: yaml_text}
    kwargs["runtime_env"] = {"env_vars": env_vars, "worker_process_setup_hook": HOOK}
    kwargs["_system_config"] = {"prestart_worker_first_driver": False}  # unused by actors
    return kwargs


def warm_worker() -> None:
    """Ray's worker setup hook: import the ClientApp and build the run's experiment, in a thread.

    The hook returns at once, so the worker takes on its actor (flwr's actor class, its
    imports) while it warms up; the actor's first message waits for what is still importing
    or building (the import lock, and the lock of ``ilora.flower.client.experiment``).
    """
    text = os.environ.get(WARM_ENV)
    if text:
        threading.Thread(target=_build, args=(text,), name="ilora-warm", daemon=True).start()


def _build(text: str) -> None:
    """Build the experiment of ``text`` into the ClientApp's cache; never fail the worker.

    A config that does not build is built again, and reported, by the handshake.
    """
    from ilora.flower.client import experiment

    try:
        experiment(text)
    except Exception:  # noqa: BLE001,S110  (the handshake builds it again and says why)
        pass


class RayStart:
    """``ray.init`` in a thread of its own; :meth:`wait` before flwr looks for Ray.

    ``backend``: flwr's backend config (:func:`ray_backend`). The thread lives on, parked,
    after ``ray.init``: Ray ties its servers' lives to the thread that started them (Linux
    ``PR_SET_PDEATHSIG``), so they would die with it.
    """

    def __init__(self, cpus: int, dashboard: bool, yaml_text: str) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's 15 starves the ClientApps
        self.backend = ray_backend(cpus, dashboard)
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._init, args=(init_kwargs(self.backend, yaml_text),), name="ray-start"
        )
        self._thread.daemon = True  # parked until the process ends
        self._thread.start()

    def _init(self, kwargs: dict[str, Any]) -> None:
        try:
            import ray

            os.environ["PYTHONPATH"] = kwargs["runtime_env"]["env_vars"]["PYTHONPATH"]
            ray.init(**kwargs)
        except BaseException as err:  # noqa: BLE001  (raised again by wait, in the caller)
            self.error = err
            self._ready.set()
            return
        self._ready.set()
        threading.Event().wait()  # Ray's servers die with this thread: never end it

    def wait(self) -> None:
        """Return once Ray runs.

        Raises:
            BaseException: whatever ``ray.init`` raised.

        """
        self._ready.wait()
        if self.error is not None:
            raise self.error
