"""``AlgorithmStrategy``: any registered algorithm as a Flower strategy on the message API.

One strategy serves every algorithm, because the math lives in the algorithm: the strategy only
moves its payloads and uploads. A run (:meth:`AlgorithmStrategy.run`) is:

1. handshake: a ``query`` message with the experiment YAML to every connected node; each
   answers with the client id it holds (its ``partition-id``), its rank and its number of
   training examples, so the server knows its clients without holding their data;
2. per round: the embedded engine's seeded sampling picks the clients, each gets its own
   ``train`` message (its payload at its rank); replies are matched to the round they answer,
   error replies and missing replies (the timeout) are counted as failed updates, stale or
   mislabelled ones as rejected, every upload passes the server's checks
   (:func:`ilora.engine.turn.server_check`); then the round step (``engine.roundstep``, the
   embedded engine's) screens, aggregates, measures (``aggregate_train``);
3. when the round step wants the clients' views, an ``evaluate`` message to every client: each
   answers with its own model's metrics on its test share and its dense changes
   (``download_error``); the round step then evaluates the global model, records the round
   and writes the checkpoint (``aggregate_evaluate``).

:meth:`AlgorithmStrategy.run` makes the same calls as Flower's ``Strategy.start`` loop (which
works too, from round 1), and can resume from a checkpoint.
With the same config, the global state after every round is bitwise identical to the embedded
engine's (``tests/flower/test_parity.py``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.app import ConfigRecord
from flwr.app import Message
from flwr.app import MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ilora.engine.checkpoint import Checkpoint
from ilora.engine.evaluation import ClientView
from ilora.engine.evaluation import embedded_views
from ilora.engine.history import History
from ilora.engine.history import RoundRecord
from ilora.engine.roundstep import Collected
from ilora.engine.roundstep import RoundStep
from ilora.engine.setup import Experiment
from ilora.engine.simulation import RunResult
from ilora.engine.turn import canonical_payload
from ilora.engine.turn import failure_event
from ilora.engine.turn import server_check
from ilora.engine.validation import layer_shapes
from ilora.flower import codec
from ilora.flower.handshake import HandshakeError as HandshakeError  # re-exported
from ilora.flower.handshake import meet_nodes
from ilora.lora.state import template
from ilora.tensors import num_bytes
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload

log = logging.getLogger(__name__)


class AlgorithmStrategy(Strategy):
    """Drive ``exp.algorithm`` over a Flower ``Grid`` (see the module docstring).

    Args:
        exp: the experiment as the server builds it from the config (model, test data).
        timeout: seconds to wait for the replies of one round's messages.
        connect_wait: seconds the handshake waits for enough nodes to be connected (a
            deployment's SuperNodes may still be connecting when the run starts).
        on_round: called with every round's record (the run directory's ``history.jsonl``).
        on_checkpoint: called with the server's state after every round.
        resume: a checkpoint to continue from (:meth:`run` only): its server state, records
            and RNG state. The clients' states live on their nodes and are not in it: the
            handshake tells the nodes the round to restore them as of.
        resume_command: how the user resumes this run, for the failure message.
        run_key: the run's name on the nodes (32 hex digits; their client states are filed
            under it); None draws a new one (a run that will not be resumed).

    """

    def __init__(
        self,
        exp: Experiment,
        timeout: float = 600.0,
        connect_wait: float = 0.0,
        on_round: Callable[[RoundRecord], None] | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        resume: Checkpoint | None = None,
        resume_command: str = "ilora flower simulate --resume DIR",
        run_key: str | None = None,
    ) -> None:
        self.exp, self.cfg, self.alg = exp, exp.cfg, exp.algorithm
        self.timeout, self.connect_wait = timeout, connect_wait
        self.on_round, self.on_checkpoint = on_round, on_checkpoint
        self.resume, self.resume_command = resume, resume_command
        self.run_key = run_key or secrets.token_hex(16)
        self.text = codec.config_to_text(exp.cfg)
        self.shapes = layer_shapes(template(exp.model))
        self.nodes: dict[int, int] = {}  # client id -> node id
        self.clients: list[ClientInfo] = []
        self.state: Any = None
        self.sent: dict[int, Payload] = {}  # this round's downloads, by client id
        self.sampled: list[int] = []  # this round's sampled clients
        self.history = History(self.cfg.algorithm, self.cfg.task)
        self.started = 0.0  # perf_counter at the start of the current round

    # ---- handshake
    def handshake(self, grid: Grid) -> None:
        """Learn which node holds which client, then initialise the server state."""
        wanted = [0] if self.alg.pooled_data else list(range(len(self.exp.clients)))
        after = 0 if self.resume is None else self.resume.round
        self.nodes, self.clients = meet_nodes(
            grid, self.text, wanted, self.timeout, self.connect_wait, (self.run_key, after)
        )
        self._start()

    def _start(self) -> None:
        """Initialise the server state (or restore the checkpoint's) and the round step."""
        if self.resume is None:
            self.state = self.alg.server_init(
                template(self.exp.model), self.clients, self.cfg.lora, self.cfg.seed
            )
        else:
            self.state = self.resume.state
            self.history.records[:] = list(self.resume.records)
            torch.set_rng_state(self.resume.rng)
        self.step = RoundStep(
            self.exp,
            self.clients,
            self.history,
            self.on_round,
            self.on_checkpoint,
            self.resume_command,
            None if self.resume is None else self.resume.sample_seed,  # secret: never sent
        )

    # ---- training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Return one ``train`` message per sampled client, each with its own payload.

        Under Flower's own ``Strategy.start`` loop the first call performs the handshake.
        """
        if self.state is None:
            self.handshake(grid)
        self.started = time.perf_counter()
        rnd = RoundInfo(server_round, self.cfg.seed)
        sampled = self.step.sample(rnd.round)
        self.sampled = sampled  # whose views the round gathers (RoundStep.view_cids)
        self.sent = {
            cid: canonical_payload(self.alg.download(self.state, self.clients[cid], rnd))
            for cid in sampled
        }
        return [
            Message(
                codec.encode_download(payload, self.clients[cid], rnd),
                self.nodes[cid],
                "train",
                group_id=str(server_round),
            )
            for cid, payload in self.sent.items()
        ]

    def collect(self, server_round: int, replies: Iterable[Message]) -> Collected:
        """Return the round's uploads that pass the server's checks, the events and the traffic."""
        by_node = {node: cid for cid, node in self.nodes.items()}
        arrived: dict[int, Message] = {}
        for reply in replies:
            cid = by_node.get(reply.metadata.src_node_id)
            if cid in self.sent:
                arrived[cid] = reply
        down = sum(num_bytes(p.tensors) for p in self.sent.values())
        got = Collected(len(self.sent), {}, dict(self.sent), [], 0, down)
        for cid in sorted(self.sent):
            client = self.clients[cid]
            if cid not in arrived:
                got.events.append(failure_event(client, "failed", f"no reply in {self.timeout:g}s"))
                continue
            upload, event, size = self._check(server_round, client, arrived[cid])
            got.up += size
            if upload is not None:
                got.uploads[cid] = upload
            if event is not None:
                got.events.append(event)
        return got

    def _check(
        self, server_round: int, client: ClientInfo, reply: Message
    ) -> tuple[Upload | None, dict[str, Any] | None, int]:
        if reply.has_error():
            return None, failure_event(client, "failed", str(reply.error.reason)), 0
        try:
            upload, cid, tag, fault = codec.decode_upload(reply.content)
        except codec.CodecError as err:
            return None, failure_event(client, "rejected", f"malformed reply: {err}"), 0
        size = num_bytes(upload.tensors)
        if tag != server_round or cid != client.cid:
            reason = f"reply for client {cid}, round {tag} (stale or mislabelled)"
            return None, failure_event(client, "rejected", reason), size
        payload = self.sent[client.cid]
        accepted, event = server_check(self.cfg, upload, payload, client, self.shapes, fault)
        return accepted, event, size

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check the replies and run the round step's aggregation; return the global model.

        The global model is ``export(state)``: factors, head and any dense residual.
        """
        got = self.collect(server_round, replies)
        self.state = self.step.aggregate(server_round, self.started, self.state, got)
        setup = self.alg.export(self.state)
        done = self.step.pending
        counts = MetricRecord({"succeeded": done.accepted, "failed_or_rejected": len(done.events)})
        return codec.to_arrays({**setup.factors, **setup.residual}), counts

    # ---- the clients' views (each client's own start: personal metrics, download_error)
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Return one ``evaluate`` message per client when the round step wants their views.

        The pooled reference has no client models: the server computes its views itself.
        """
        due, full = self.step.personal_due(server_round)
        if not due or self.alg.pooled_data:
            return []
        rnd = RoundInfo(server_round + 1, self.cfg.seed)  # what each client would start from
        messages = []
        for client in (self.clients[c] for c in self.step.view_cids(self.sampled)):
            payload = canonical_payload(self.alg.download(self.state, client, rnd))
            content = codec.encode_download(payload, client, rnd)
            content.config_records["meta"]["full"] = full
            messages.append(
                Message(content, self.nodes[client.cid], "evaluate", group_id=str(server_round))
            )
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Close the round with the clients' views; return its personal metrics."""
        due, full = self.step.personal_due(server_round)
        views = None
        if due and self.alg.pooled_data:
            rnd = RoundInfo(server_round + 1, self.cfg.seed)
            views = embedded_views(self.exp, {}, self.step.view_cids(self.sampled))(
                self.state, rnd, full
            )
        elif due:
            views = self._views(replies)
        record = self.step.finish(self.state, views, {})  # client states stay on the nodes
        values: dict[str, int | float | list[int] | list[float]] = {
            k: v for k, v in record.metrics.items() if k.startswith("personal_")
        }
        return MetricRecord(values) if values else None

    def _views(self, replies: Iterable[Message]) -> list[ClientView]:
        views: dict[int, ClientView] = {}
        for reply in replies:
            if reply.has_error():
                log.warning("personal evaluation failed: %r", reply.error.reason)  # one line
                continue
            try:
                view = codec.decode_view(reply.content)
            except codec.CodecError as err:
                log.warning("malformed evaluate reply: %r", str(err))
                continue
            if view.cid in self.nodes and self.nodes[view.cid] == reply.metadata.src_node_id:
                views[view.cid] = view
        return [views[cid] for cid in sorted(views)]

    def summary(self) -> None:
        log.info("AlgorithmStrategy(%s) over %d clients", self.cfg.algorithm, len(self.clients))

    # ---- the run
    def run(self, grid: Grid) -> RunResult:
        """Run ``fed.rounds`` rounds over ``grid`` (after the resumed ones) and return the result.

        The same calls as Flower's ``Strategy.start`` loop, without its logging.
        """
        self.handshake(grid)
        for r in range(len(self.history.records) + 1, self.cfg.fed.rounds + 1):
            messages = list(self.configure_train(r, ArrayRecord(), ConfigRecord(), grid))
            replies = grid.send_and_receive(messages, timeout=self.timeout)
            self.aggregate_train(r, replies)
            messages = list(self.configure_evaluate(r, ArrayRecord(), ConfigRecord(), grid))
            replies = grid.send_and_receive(messages, timeout=self.timeout) if messages else []
            self.aggregate_evaluate(r, replies)
        if self.cfg.eval.final_full:
            self.history.final = self.step.global_metrics(self.state, full=True)
        final = self.alg.export(self.state)
        return RunResult(self.history, final, self.state, self.exp.head_center)
