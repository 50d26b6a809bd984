"""``ilora flower worker``: one long-lived ClientApp process per SuperNode (process isolation).

With ``flower-supernode --isolation subprocess`` (Flower's default) every message starts a new
``flwr-clientapp`` process, which imports torch, transformers and this package and rebuilds the
experiment before it can train: seconds per message, paid again for every message. With
``flower-supernode --isolation process`` the SuperNode starts nothing; a process of the operator's
choosing takes its tasks from the SuperNode's Runtime API. This is that process. It imports
:mod:`ilora.flower.client` once, keeps the experiment it builds on the first message (the
``lru_cache`` of :func:`ilora.flower.client.experiment`), and then, per task:

1. ``AcquireTask`` on the Runtime API (signed with the SuperExec secret when one is given:
   ``flower-supernode --superexec-auth-secret-file``, so no other local process can take tasks);
2. with the task's token: pulls the message, the node's context and the FAB (:func:`pull_input`:
   flwr's ``pull_task_input`` with a short retry backoff, below), runs the ClientApp, pushes
   the reply and the updated context (flwr's ``push_message`` / ``push_task_output``), sending
   heartbeats meanwhile.

The SuperNode offers the task before it has fetched the message's content from the SuperLink,
so the first pull of that content often finds it missing. flwr's ``pull_task_input`` then
retries after 1 s, 2 s, 4 s ... (``PULL_INITIAL_BACKOFF``): the benchmark's workers spent 1.1 to
3.5 s per message there for a ClientApp of 0.2 s. :func:`pull_input` makes the same calls with
flwr's ``pull_and_inflate_object_from_tree`` retrying after :data:`PULL_BACKOFF_S` seconds, up
to :data:`PULL_BACKOFF_CAP_S` (its own keyword arguments). The SuperNode's own fetch from the
SuperLink keeps flwr's backoff (no option reaches it): when it asks while the ServerApp is
still uploading the message's content (flwr's grid registers the message first), the worker
still waits 1 to 3 s.

It runs the ClientApp installed with ``ilora`` on this machine and never code from the FAB:
a FAB whose ``clientapp`` component is not the one ``ilora flower new`` writes is answered with
an error. Context state stays on the SuperNode, exactly as with one process per message.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context
from flwr.app import Error
from flwr.app import Message
from flwr.clientapp import ClientApp
from flwr.common.config import get_fab_config
from flwr.common.constant import ErrorCode
from flwr.common.constant import SubStatus
from flwr.common.serde import context_from_proto
from flwr.common.serde import fab_from_proto
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.proto.runtime_pb2 import PullAppMessagesRequest
from flwr.proto.runtime_pb2 import PullTaskInputRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.heartbeat import make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_protobuf_utils import make_pull_object_fn_protobuf
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.interceptors import SuperExecAuthHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message
from flwr.supernode.runtime.run_clientapp import push_task_output

from ilora.flower.app import CLIENTAPP_REF
from ilora.flower.client import make_client_app

log = logging.getLogger(__name__)
ACQUIRE = "/flwr.proto.Runtime/AcquireTask"  # the method the SuperExec secret protects
PULL_BACKOFF_S = 0.05  # first wait before pulling a message's content again (flwr: 1 s)
PULL_BACKOFF_CAP_S = 0.5  # longest wait between two pulls (flwr: 10 s)


class ForeignAppError(RuntimeError):
    """A task of a Flower app that is not an ILoRA app."""


@dataclass(frozen=True)
class RuntimeApi:
    """Where the SuperNode's Runtime API listens and how to reach it."""

    address: str  # host:port, e.g. 127.0.0.1:9094
    secret: bytes | None = None  # the SuperExec auth secret, None: AcquireTask unsigned
    root_certificates: bytes | None = None  # None: plain HTTP (the API is on loopback)

    def client(self, token: str | None = None) -> RuntimeHttpClient:
        """Return a client: the worker's own (no token) or one task's (its token)."""
        if token is not None:
            interceptors = [
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(token),
            ]
        else:
            interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
            if self.secret:
                interceptors.append(
                    SuperExecAuthHttpInterceptor(
                        master_secret=self.secret, protected_methods=[ACQUIRE]
                    )
                )
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.root_certificates is None,
            root_certificates=self.root_certificates,
            interceptors=interceptors,  # type: ignore[arg-type]
            retry_invoker=make_simple_http_retry_invoker(),
        )


def check_fab(content: bytes) -> None:
    """Raise :class:`ForeignAppError` unless the FAB is an app of ``ilora flower new``."""
    conf = get_fab_config(content)
    found = conf.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    if found.get("clientapp") != CLIENTAPP_REF:
        raise ForeignAppError(
            f"this SuperNode's worker runs only ILoRA apps (clientapp = {CLIENTAPP_REF!r}), "
            f"not {found.get('clientapp')!r}"
        )


def pull_input(client: RuntimeHttpClient) -> tuple[Message, Context, Fab]:
    """Return the task's message, the node's context and the FAB (module docstring).

    The calls of flwr 1.42's ``run_clientapp.pull_task_input``, with a short retry backoff.
    """
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    got = client.PullMessages(PullAppMessagesRequest())
    if not got.messages_list:
        raise RuntimeError("the SuperNode's Runtime API gave the task no message")
    node, tree = Node(node_id=context.node_id), got.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        max_tries_per_object=None,  # bounded by flwr's PULL_MAX_TIME (2 h) alone, as before
        initial_backoff=PULL_BACKOFF_S,
        backoff_cap=PULL_BACKOFF_CAP_S,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as flwr: not in the content
    return message, context, fab_from_proto(res.fab)


def run_task(app: ClientApp, api: RuntimeApi, token: str) -> None:
    """Run one task of the SuperNode: pull, run the ClientApp, push the reply and context."""
    client = api.client(token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context, status, details = None, SubStatus.FAILED, "the task failed before its message"
    times = [time.monotonic()]
    try:
        message, context, fab = pull_input(client)
        times.append(time.monotonic())
        try:
            check_fab(fab.content)
            reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as err:  # noqa: BLE001  (a failing ClientApp replies with an error)
            log.exception("the ClientApp raised")
            details = f"{type(err).__name__}: {err}"
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, details), reply_to=message)
        times.append(time.monotonic())
        push_message(client, reply, context)
        times.append(time.monotonic())
        pull, work, push = (b - a for a, b in zip(times, times[1:], strict=False))
        log.info(
            "%s message: pulled in %.2f s, ClientApp %.2f s, reply pushed in %.2f s",
            message.metadata.message_type,
            pull,
            work,
            push,
        )
    finally:
        push_task_output(client=client, context=context, sub_status=status, details=details)
        heartbeat.stop()
        client.close()


def serve(api: RuntimeApi, poll: float = 0.05, max_tasks: int | None = None) -> int:
    """Take and run the SuperNode's ClientApp tasks until stopped; return how many ran.

    Args:
        api: the SuperNode's Runtime API.
        poll: seconds between two ``AcquireTask`` calls while there is no task.
        max_tasks: stop after this many tasks (None: run until the process is ended).

    """
    app = make_client_app()
    runtime = api.client()
    done = 0
    try:
        while max_tasks is None or done < max_tasks:
            got = runtime.AcquireTask(
                AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
            )
            if got.HasField("task") and got.token:
                run_task(app, api, got.token)
                done += 1
            else:
                time.sleep(poll)
    finally:
        runtime.close()
    return done


def read_secret(path: Path | None) -> bytes | None:
    """Return the SuperExec secret in ``path`` (raw bytes, as flwr reads it), None if no path."""
    if path is None:
        return None
    secret = path.read_bytes()
    if not secret:
        raise ValueError(f"the SuperExec secret file {path} is empty; write a random secret")
    return secret
