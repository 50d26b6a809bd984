"""The simulation's start-up and pace: Ray's arguments, the warm-up of its workers, the ticks.

No Ray runs here (``test_ray_network.py`` and ``test_simulation_engine.py`` run it for real):
the warm-up hook runs in this process, as in a Ray worker, and must fill the ClientApp's
cache with exactly what the handshake would build, never fail, and leave a config that does
not build to the handshake.
"""

from __future__ import annotations

import importlib
import queue
import sys
import threading
from pathlib import Path

import pytest
import torch

from ilora import config as config_mod
from ilora.engine.setup import build
from ilora.flower import client
from ilora.flower import codec
from ilora.flower import raystart
from ilora.flower import simulate
from ilora.flower.grid import LocalGrid
from ilora.flower.grid import poll_interval

SMOKE = config_mod.load(Path("configs/smoke.yaml"), ["data.num_clients=3"])


def _warm(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Run the worker hook with ``text`` and wait for its thread."""
    monkeypatch.setenv(raystart.WARM_ENV, text)
    before = {t.ident for t in threading.enumerate()}
    raystart.warm_worker()
    for thread in threading.enumerate():
        if thread.name == "ilora-warm" and thread.ident not in before:
            thread.join(timeout=600)


def test_ray_gets_flwrs_arguments_and_an_importable_warm_up_hook() -> None:
    backend = raystart.ray_backend(2, False)
    kwargs = raystart.init_kwargs(backend, "seed: 0\n")
    assert kwargs["num_cpus"] == 2 and kwargs["include_dashboard"] is False
    assert kwargs["logging_level"] == "WARNING" and kwargs["log_to_driver"] is True
    env = kwargs["runtime_env"]["env_vars"]
    assert env["PYTHONPATH"].split(":")[: len(sys.path)] == sys.path
    assert env[raystart.WARM_ENV] == "seed: 0\n"
    module, name = kwargs["runtime_env"]["worker_process_setup_hook"].rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is raystart.warm_worker


def test_a_warm_worker_caches_what_the_handshake_would_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = codec.config_to_text(SMOKE)  # the handshake's text
    client._experiment.cache_clear()
    _warm(monkeypatch, text)
    assert client._experiment.cache_info().currsize == 1
    cached, fresh = client.experiment(text), build(codec.config_from_text(text))
    assert client._experiment.cache_info().hits == 1  # the handshake finds it built
    assert cached.clients == fresh.clients
    for mine, theirs in zip(cached.local_tests, fresh.local_tests, strict=True):
        assert torch.equal(mine.labels, theirs.labels)
        assert all(torch.equal(mine.inputs[k], theirs.inputs[k]) for k in theirs.inputs)
    want = fresh.model.state_dict()
    for key, tensor in cached.model.state_dict().items():
        assert torch.equal(tensor, want[key]), key


def test_a_config_that_does_not_build_is_left_to_the_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    bad = codec.config_to_text(SMOKE).replace("tiny-text", "no-such-task")
    _warm(monkeypatch, bad)
    assert raised == []  # the worker lives on
    with pytest.raises(config_mod.ConfigError, match="no-such-task"):
        client.experiment(bad)


def test_the_engine_dispatches_each_nodes_next_message_until_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flwr.server.superlink.fleet.vce import vce_api

    monkeypatch.setattr(vce_api, "add_messages_to_queue", vce_api.add_messages_to_queue)
    simulate.quick_dispatch()
    assert vce_api.add_messages_to_queue.func is simulate._dispatch  # type: ignore[attr-defined]

    class State:
        def __init__(self) -> None:
            self.pending = {1: ["a1", "a2"], 2: ["b1"]}

        def get_message_ins(self, node_id: int, limit: int) -> list[str]:
            got, self.pending[node_id] = (
                self.pending[node_id][:limit],
                self.pending[node_id][limit:],
            )
            return got

    out: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    dispatch = vce_api.add_messages_to_queue  # what flwr's run_api starts in a thread
    worker = threading.Thread(target=dispatch, args=(State(), out, {1: 0, 2: 1}, stop))
    worker.start()
    got = [out.get(timeout=60) for _ in range(3)]
    stop.set()
    worker.join(timeout=60)
    assert got == ["a1", "b1", "a2"] and not worker.is_alive()


def test_replies_are_pulled_every_5_ms_in_process_and_every_100_ms_from_a_superlink() -> None:
    from flwr.superlink.grid import InMemoryGrid

    in_process = InMemoryGrid.__new__(InMemoryGrid)
    assert poll_interval(in_process) == 0.005
    assert poll_interval(LocalGrid(client.make_client_app(), [])) == 0.1
