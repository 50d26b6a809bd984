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
   (:func:`ilora.engine.turn.server_check`), then the algorithm aggregates under
   ``fed.min_success``;
3. evaluation as in the embedded engine: the global model on the server's test subset and each
   client's own model on its own test share (``evaluate`` messages).

With the same config, the global state after every round is bitwise identical to the embedded
engine's (``tests/flower/test_parity.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ilora.engine import robust
from ilora.engine.evaluation import evaluate, weighted_average
from ilora.engine.history import History, RoundRecord
from ilora.engine.sampling import sample_clients, sampling_seed
from ilora.engine.setup import Experiment
from ilora.engine.simulation import (
    RunResult,
    check_success,
    eval_subset,
    personal_metrics,
)
from ilora.engine.turn import canonical_payload, failure_event, screen_round, server_check
from ilora.engine.validation import layer_shapes
from ilora.flower import codec
from ilora.lora.state import load_setup, template
from ilora.tensors import num_bytes
from ilora.types import ClientInfo, Payload, RoundInfo, Upload

log = logging.getLogger(__name__)


class HandshakeError(RuntimeError):
    """The connected nodes do not make up the experiment's clients."""


class AlgorithmStrategy(Strategy):
    """Drive ``exp.algorithm`` over a Flower ``Grid`` (see the module docstring).

    Args:
        exp: the experiment as the server builds it from the config (model, test data).
        timeout: seconds to wait for the replies of one round's messages.
        connect_wait: seconds the handshake waits for enough nodes to be connected (a
            deployment's SuperNodes may still be connecting when the run starts).

    """

    def __init__(self, exp: Experiment, timeout: float = 600.0, connect_wait: float = 0.0) -> None:
        self.exp, self.cfg, self.alg = exp, exp.cfg, exp.algorithm
        self.timeout, self.connect_wait = timeout, connect_wait
        self.text = codec.config_to_text(exp.cfg)
        self.shapes = layer_shapes(template(exp.model))
        self.nodes: dict[int, int] = {}  # client id -> node id
        self.clients: list[ClientInfo] = []
        self.state: Any = None
        self.sent: dict[int, Payload] = {}  # this round's downloads, by client id
        self.sample_seed = sampling_seed(exp.cfg)  # secret in a DP run: never sent (sampling.py)

    # ---- handshake
    def handshake(self, grid: Grid) -> None:
        """Learn which node holds which client, then initialise the server state."""
        content = RecordDict({"experiment": ConfigRecord({"yaml": self.text})})
        node_ids = self._wait_for_nodes(grid)
        messages = [Message(content, nid, "query", group_id="handshake") for nid in node_ids]
        infos: dict[int, tuple[int, ClientInfo]] = {}
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                raise HandshakeError(f"node {node} refused the handshake: {reply.error.reason}")
            got = reply.content.config_records["client"]
            info = ClientInfo(int(got["cid"]), int(got["rank"]), int(got["num_examples"]))  # type: ignore[arg-type]
            if info.cid in infos:
                raise HandshakeError(
                    f"nodes {infos[info.cid][0]} and {node} both hold partition-id {info.cid}; "
                    "give every SuperNode its own --node-config 'partition-id=...'"
                )
            infos[info.cid] = (node, info)
        self._assign(infos)
        self.state = self.alg.server_init(
            template(self.exp.model), self.clients, self.cfg.lora, self.cfg.seed
        )

    def _wait_for_nodes(self, grid: Grid) -> list[int]:
        """Return the connected node ids, after up to ``connect_wait`` s for one per client."""
        wanted = 1 if self.alg.pooled_data else len(self.exp.clients)
        deadline = time.monotonic() + self.connect_wait
        while len(node_ids := sorted(grid.get_node_ids())) < wanted:
            if time.monotonic() >= deadline:
                break  # the handshake names the missing clients
            time.sleep(1.0)
        return node_ids

    def _assign(self, infos: dict[int, tuple[int, ClientInfo]]) -> None:
        wanted = [0] if self.alg.pooled_data else list(range(len(self.exp.clients)))
        missing = [cid for cid in wanted if cid not in infos]
        if missing:
            raise HandshakeError(
                f"no connected node holds client(s) {missing} of data.num_clients = "
                f"{len(self.exp.clients)}; start one SuperNode per client with "
                "--node-config 'partition-id=<id>'"
            )
        self.nodes = {cid: infos[cid][0] for cid in wanted}
        self.clients = [infos[cid][1] for cid in wanted]

    # ---- training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Return one ``train`` message per sampled client, each with its own payload.

        Under Flower's own ``Strategy.start`` loop the first call performs the handshake.
        """
        if self.state is None:
            self.handshake(grid)
        rnd = RoundInfo(server_round, self.cfg.seed)
        fraction = 1.0 if self.alg.pooled_data else self.cfg.fed.fraction
        cids = [c.cid for c in self.clients]
        sampled = sample_clients(cids, fraction, self.sample_seed, rnd.round)
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

    def collect(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[dict[int, Upload], list[dict[str, Any]], int]:
        """Return the accepted uploads (by client id), the events and the bytes uploaded."""
        by_node = {node: cid for cid, node in self.nodes.items()}
        arrived: dict[int, Message] = {}
        for reply in replies:
            cid = by_node.get(reply.metadata.src_node_id)
            if cid in self.sent:
                arrived[cid] = reply
        uploads: dict[int, Upload] = {}
        events: list[dict[str, Any]] = []
        up = 0
        for cid in sorted(self.sent):
            client = self.clients[cid]
            if cid not in arrived:
                events.append(failure_event(client, "failed", f"no reply in {self.timeout:g}s"))
                continue
            upload, event, size = self._check(server_round, client, arrived[cid])
            up += size
            if upload is not None:
                uploads[cid] = upload
            if event is not None:
                events.append(event)
        uploads, screened = screen_round(self.cfg, uploads, self.sent, self.clients)
        return uploads, events + screened, up

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
        """Check the replies and aggregate them; return the global model and the round's counts.

        The global model is ``export(state)``: factors, head and any dense residual.
        """
        uploads, events, _ = self.collect(server_round, replies)
        self._aggregate(server_round, uploads, events)
        setup = self.alg.export(self.state)
        counts = MetricRecord({"succeeded": len(uploads), "failed_or_rejected": len(events)})
        return codec.to_arrays({**setup.factors, **setup.residual}), counts

    def _aggregate(
        self, server_round: int, uploads: dict[int, Upload], events: list[dict[str, Any]]
    ) -> None:
        check_success(server_round, len(self.sent), uploads, events, self.cfg.fed.min_success)
        rnd = RoundInfo(server_round, self.cfg.seed)
        self.state = robust.aggregate(self.cfg, self.alg, self.state, uploads, rnd)

    # ---- evaluation (each client's own model on its own test share)
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Return one ``evaluate`` message per client (none if no client has a test share).

        The pooled reference is evaluated on the server; ``data.local_test_fraction: 0`` leaves
        every client without a test share, so there is nothing to ask the nodes.
        """
        if self.alg.pooled_data or not any(len(t) for t in self.exp.local_tests):
            return []
        full = bool(config.get("full", False))
        rnd = RoundInfo(server_round + 1, self.cfg.seed)  # what each client would start from
        messages = []
        for client in self.clients:
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
        """Return the example-weighted personal metrics of the clients that answered."""
        results: dict[int, tuple[dict[str, float], int]] = {}
        for reply in replies:
            if reply.has_error():
                log.warning("personal evaluation failed: %s", reply.error.reason)
                continue
            cid = int(reply.content.config_records["meta"]["cid"])  # type: ignore[arg-type]
            got = {k: float(v) for k, v in reply.content.metric_records["metrics"].items()}  # type: ignore[arg-type]
            n = int(got.pop("num_examples"))
            results[cid] = (got, n)
        merged = weighted_average([results[cid] for cid in sorted(results)])
        values: dict[str, int | float | list[int] | list[float]] = dict(merged)
        return MetricRecord(values) if values else None

    def summary(self) -> None:
        log.info("AlgorithmStrategy(%s) over %d clients", self.cfg.algorithm, len(self.clients))

    # ---- the run
    def run(self, grid: Grid, on_round: Callable[[RoundRecord], None] | None = None) -> RunResult:
        """Run ``fed.rounds`` rounds over ``grid`` and return the result (as the embedded run)."""
        cfg, alg, model = self.cfg, self.alg, self.exp.model
        self.handshake(grid)
        history = History(cfg.algorithm, cfg.task)
        subset = eval_subset(self.exp.data.test, cfg.eval.subset, cfg.seed)
        for r in range(1, cfg.fed.rounds + 1):
            t0 = time.perf_counter()
            messages = list(self.configure_train(r, ArrayRecord(), ConfigRecord(), grid))
            down = sum(num_bytes(p.tensors) for p in self.sent.values())
            replies = grid.send_and_receive(messages, timeout=self.timeout)
            uploads, events, up = self.collect(r, replies)
            self._aggregate(r, uploads, events)
            metrics = dict(alg.round_metrics(self.state))
            losses = [u.metrics["train_loss"] for u in uploads.values()]
            metrics["train_loss"] = sum(losses) / len(losses)
            global_due, personal_due = cfg.eval.due(r, cfg.fed.rounds)
            full = cfg.eval.final_full and r == cfg.fed.rounds
            if personal_due:
                metrics.update(self._personal(grid, r, full))
            if global_due:
                load_setup(model, alg.export(self.state))
                metrics.update(evaluate(model, subset, cfg.eval.batch_size))
            traffic, sampled = (up, down), len(self.sent)
            record = history.close_round(r, t0, traffic, sampled, len(uploads), metrics, events)
            if on_round is not None:
                on_round(record)
        setup = alg.export(self.state)
        if cfg.eval.final_full:
            load_setup(model, setup)
            history.final = evaluate(model, self.exp.data.test, cfg.eval.batch_size)
        return RunResult(history, setup, self.state)

    def _personal(self, grid: Grid, server_round: int, full: bool) -> dict[str, float]:
        if self.alg.pooled_data:  # the global model on every client's share (server-side data)
            rnd = RoundInfo(server_round + 1, self.cfg.seed)
            return personal_metrics(self.exp, self.state, {}, rnd, full)
        config = ConfigRecord({"full": full})
        messages = list(self.configure_evaluate(server_round, ArrayRecord(), config, grid))
        if not messages:
            return {}
        replies = grid.send_and_receive(messages, timeout=self.timeout)
        merged = self.aggregate_evaluate(server_round, replies)
        return {} if merged is None else {k: float(v) for k, v in merged.items()}  # type: ignore[arg-type]
