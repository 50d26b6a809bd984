"""The handshake: which connected node holds which client of the experiment.

The server sends a ``query`` message with the experiment YAML to every connected node; each
answers with the client id it holds (its ``partition-id``), its rank and its number of
training examples, so the server knows its clients without holding their data. The message
also names the run (``run``: a key the nodes file their clients' state under) and the round it
resumes after (``resume``, 0 for a fresh run), so that nodes of a method with client state
restore it as of that round (:mod:`ilora.flower.nodestate`).
"""

from __future__ import annotations

import time

from flwr.app import ConfigRecord
from flwr.app import Message
from flwr.app import RecordDict
from flwr.serverapp import Grid

from ilora.types import ClientInfo


class HandshakeError(RuntimeError):
    """The connected nodes do not make up the experiment's clients."""


def meet_nodes(
    grid: Grid,
    text: str,
    wanted: list[int],
    timeout: float,
    connect_wait: float,
    run: tuple[str, int],
) -> tuple[dict[int, int], list[ClientInfo]]:
    """Return ``{client id: node id}`` and the clients ``wanted``, as their nodes describe them.

    Waits up to ``connect_wait`` seconds for one node per wanted client (a deployment's
    SuperNodes may still be connecting), then queries every connected node. ``run`` is the
    run's key and the round it resumes after (0: a fresh run).

    Raises:
        HandshakeError: a node refuses, two nodes hold one client, or a client has no node.

    """
    key, after = run
    content = RecordDict({"experiment": ConfigRecord({"yaml": text, "run": key, "resume": after})})
    node_ids = _wait_for_nodes(grid, len(wanted), connect_wait)
    messages = [Message(content, nid, "query", group_id="handshake") for nid in node_ids]
    infos: dict[int, tuple[int, ClientInfo]] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
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
    missing = [cid for cid in wanted if cid not in infos]
    if missing:
        silent = len(node_ids) - len(infos)
        raise HandshakeError(_missing_reason(missing, len(wanted), silent, timeout))
    return {cid: infos[cid][0] for cid in wanted}, [infos[cid][1] for cid in wanted]


def _missing_reason(missing: list[int], clients: int, silent: int, timeout: float) -> str:
    """Return the one-line reason why clients ``missing`` have no node, with the fix."""
    if silent:  # connected, but no answer in time: slower than the timeout, not absent
        return (
            f"{silent} connected node(s) did not answer the handshake within the {timeout:g}-s "
            f"reply timeout, so client(s) {missing} of data.num_clients = {clients} have none; "
            "raise the timeout (ilora flower simulate --timeout, or the Flower app's run "
            "config timeout)"
        )
    return (
        f"no connected node holds client(s) {missing} of data.num_clients = {clients}; "
        "start one SuperNode per client with --node-config 'partition-id=<id>'"
    )


def _wait_for_nodes(grid: Grid, wanted: int, connect_wait: float) -> list[int]:
    """Return the connected node ids, after up to ``connect_wait`` s for ``wanted`` of them."""
    deadline = time.monotonic() + connect_wait
    while len(node_ids := sorted(grid.get_node_ids())) < wanted:
        if time.monotonic() >= deadline:
            break  # the handshake names the missing clients
        time.sleep(1.0)
    return node_ids
