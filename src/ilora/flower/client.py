"""The ``ClientApp``: our one local training loop behind Flower's message API.

A node learns which client it is from its node config (``partition-id``, and optionally
``rank`` to override the config's rank policy; the Simulation Engine sets ``partition-id``
itself) and what experiment it is part of from the server's handshake (``query`` message with
the experiment YAML). It builds the same ``Experiment`` as the embedded engine, keeps the YAML
and its client state (``cstate``) in ``context.state`` between messages, and answers:

- ``query``: its client id, rank and number of training examples; the message also names
  the run (a key) and the round it resumes after, and a node whose method keeps client state
  prepares that state (:mod:`ilora.flower.nodestate`) or refuses in one line;
- ``train``: runs :func:`ilora.engine.turn.client_work` on the download and replies with the
  upload, or with an error when its (injected) fault lost the update;
- ``evaluate``: its own model (``client_init`` of the download, untrained) on its test share,
  and that model's dense changes (``engine.evaluation.client_view``).

Client state: with a state directory (node config ``state-dir``, else the ``state_dir`` given
to :func:`make_client_app`) a method with ``stateful_clients`` keeps it on the node's disk,
round by round (:mod:`ilora.flower.nodestate`), so a resumed run is bitwise the uninterrupted
one; without one it lives in ``context.state`` only, and a resumed run is refused.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path

from flwr.app import ConfigRecord
from flwr.app import Context
from flwr.app import Error
from flwr.app import Message
from flwr.app import RecordDict
from flwr.clientapp import ClientApp

from ilora.config import ExperimentConfig
from ilora.config import TrainConfig
from ilora.engine.evaluation import client_view
from ilora.engine.setup import Experiment
from ilora.engine.setup import build
from ilora.engine.simulation import personal_tests
from ilora.engine.simulation import run_clients
from ilora.engine.turn import client_work
from ilora.flower import codec
from ilora.flower.nodestate import NodeState
from ilora.flower.nodestate import NodeStateError
from ilora.flower.nodestate import check_run_key
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientInfo
from ilora.types import TensorDict

EXPERIMENT, CSTATE = "ilora-experiment", "ilora-cstate"  # names of our records in context.state
STATE_DIR = "state-dir"  # the node config key of the node's client-state directory
FAULT_CODE = 1001  # the error code of an update lost to an injected fault


class NodeConfigError(ValueError):
    """A SuperNode started without the node config this app needs."""


@dataclass(frozen=True)
class ClientSide:
    """What one node needs to act as client ``client.cid`` of an experiment."""

    exp: Experiment
    client: ClientInfo
    data: ArrayDataset
    test: ArrayDataset
    train: TrainConfig


_BUILDING = threading.Lock()  # one build at a time: a warm-up thread may be building it


def experiment(text: str) -> Experiment:
    """Return the experiment of a config's YAML text (cached: a process serves many nodes).

    Thread-safe: under ``ilora flower simulate`` a Ray worker builds it in a thread of its own
    before its first message (:mod:`ilora.flower.raystart`).
    """
    with _BUILDING:
        return _experiment(text)


@functools.lru_cache(maxsize=2)
def _experiment(text: str) -> Experiment:
    return build(codec.config_from_text(text))


def client_side(text: str, partition: int, rank: int | None) -> ClientSide:
    """Return client ``partition`` of the experiment ``text``, at ``rank`` if given."""
    exp = experiment(text)
    clients, shares, steps = run_clients(exp)
    if not 0 <= partition < len(exp.clients):
        raise NodeConfigError(
            f"partition-id {partition} is outside 0..{len(exp.clients) - 1} "
            f"(data.num_clients = {len(exp.clients)}); fix the SuperNode's --node-config"
        )
    pooled = exp.algorithm.pooled_data
    client = clients[0] if pooled else clients[partition]
    if rank is not None and not pooled:
        client = replace(client, rank=rank)
    data = shares[0] if pooled else shares[partition]
    train = replace(exp.cfg.train, steps=steps)
    return ClientSide(exp, client, data, exp.local_tests[partition], train)


def node_identity(context: Context) -> tuple[int, int | None]:
    """Return ``(partition-id, rank or None)`` from the node config."""
    node = context.node_config
    if "partition-id" not in node:
        raise NodeConfigError(
            "this SuperNode has no partition-id; start it with "
            "--node-config 'partition-id=<client id>' (and optionally rank=<r>)"
        )
    rank = node.get("rank")
    return int(node["partition-id"]), None if rank is None else int(rank)


def _side(context: Context) -> ClientSide:
    if EXPERIMENT not in context.state.config_records:
        raise NodeConfigError("a train/evaluate message arrived before the handshake")
    text = str(context.state.config_records[EXPERIMENT]["yaml"])
    return client_side(text, *node_identity(context))


def _cstate(context: Context) -> TensorDict:
    if CSTATE in context.state.array_records:
        return codec.from_arrays(context.state.array_records[CSTATE])
    return {}


def node_state(context: Context, side: ClientSide, default: Path | None) -> NodeState | None:
    """Return the client's state files, or None (no client state, or no state directory)."""
    root = context.node_config.get(STATE_DIR) or default
    if not side.exp.algorithm.stateful_clients or not root:
        return None
    run = str(context.state.config_records[EXPERIMENT]["run"])
    return NodeState(Path(str(root)), run, side.client.cid)


def prepare_state(context: Context, side: ClientSide, default: Path | None, after: int) -> None:
    """Set up the client's state for a run that starts after round ``after`` (0: fresh)."""
    store = node_state(context, side, default)
    if store is not None:
        store.resume(after)
        return
    context.state.array_records.pop(CSTATE, None)
    if after > 0 and side.exp.algorithm.stateful_clients:
        raise NodeStateError(
            f"{side.exp.cfg.algorithm} keeps client {side.client.cid}'s state between rounds, "
            f"but this node keeps it only in memory, so the run cannot resume after round "
            f"{after} bitwise; start the SuperNode with --node-config 'state-dir=\"DIR\"' "
            "(a directory on the node) and start the run again"
        )


def check_noise_source(cfg: ExperimentConfig, context: Context) -> None:
    """Refuse DP noise the server could regenerate, unless this node's own config allows it.

    ``dp.reproducible_noise`` derives the noise from the seed the server sent; a node accepts
    it only with ``--node-config 'dp-reproducible-noise=true'`` (tests), so the server alone
    can never make a client's noise removable.
    """
    allowed = str(context.node_config.get("dp-reproducible-noise", "false")).lower() == "true"
    if cfg.dp.reproducible_noise and not allowed:
        raise NodeConfigError(
            "the server asks for dp.reproducible_noise (noise it could regenerate and remove); "
            "refused: only a node started with --node-config 'dp-reproducible-noise=true' "
            "accepts it (tests)"
        )


def handshake(msg: Message, context: Context, default: Path | None) -> Message:
    got = msg.content.config_records["experiment"]
    text = str(got["yaml"])
    side = client_side(text, *node_identity(context))
    check_noise_source(side.exp.cfg, context)
    run = check_run_key(str(got.get("run", "")))
    context.state.config_records[EXPERIMENT] = ConfigRecord({"yaml": text, "run": run})
    prepare_state(context, side, default, int(got.get("resume", 0)))  # type: ignore[arg-type]
    info = ConfigRecord(
        {
            "cid": node_identity(context)[0],
            "rank": side.client.rank,
            "num_examples": side.client.num_examples,
        }
    )
    return Message(RecordDict({"client": info}), reply_to=msg)


def train(msg: Message, context: Context, default: Path | None) -> Message:
    side = _side(context)
    payload, client, rnd = codec.decode_download(msg.content)
    store = node_state(context, side, default)
    cfg: ExperimentConfig = side.exp.cfg
    work = client_work(
        cfg,
        side.exp.algorithm,
        side.exp.model,
        payload,
        _cstate(context) if store is None else store.load(rnd.round - 1),
        client,
        side.data,
        rnd,
        side.train,
    )
    if store is None:
        context.state.array_records[CSTATE] = codec.to_arrays(work.cstate, dtype=None)
    else:
        store.save(rnd.round, work.cstate)
    if work.upload is None:
        return Message(Error(FAULT_CODE, str(work.fault)), reply_to=msg)
    return Message(
        codec.encode_upload(work.upload, client.cid, rnd.round, work.fault), reply_to=msg
    )


def personal_evaluate(msg: Message, context: Context, default: Path | None) -> Message:
    """Evaluate the client's start of round ``rnd`` (its state as of ``rnd - 1``)."""
    side = _side(context)
    payload, client, rnd = codec.decode_download(msg.content)
    full = bool(msg.content.config_records["meta"].get("full", True))
    test = personal_tests(side.exp, full)[node_identity(context)[0]]
    store = node_state(context, side, default)
    cstate = _cstate(context) if store is None else store.load(rnd.round - 1)
    view = client_view(side.exp, payload, cstate, client, rnd, test)
    return Message(codec.encode_view(view, rnd.round), reply_to=msg)


def make_client_app(state_dir: Path | None = None) -> ClientApp:
    """Return the ``ClientApp`` of every registered algorithm (the message types above).

    ``state_dir``: where nodes without a ``state-dir`` in their node config keep their
    clients' state (None: in memory only, a run of a method with client state cannot resume).
    """
    app = ClientApp()

    @app.query()
    def _query(msg: Message, context: Context) -> Message:
        return handshake(msg, context, state_dir)

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        return train(msg, context, state_dir)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return personal_evaluate(msg, context, state_dir)

    return app
