"""The strategy's guards: stale or mislabelled replies, crashed apps and lost replies."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Context
from flwr.app import Message
from flwr.clientapp import ClientApp

from ilora import config as config_mod
from ilora.engine.setup import build
from ilora.flower import codec
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.strategy import AlgorithmStrategy

CFG = config_mod.load(
    "configs/smoke.yaml", ["algorithm=fedit", "fed.rounds=2", "eval.final_full=false"]
)


class Tampering(ClientApp):
    """Node 2's train replies claim round 99; node 3's app raises; others behave."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = make_client_app()

    def __call__(self, message: Message, context: Context) -> Message:
        kind = message.metadata.message_type
        if kind == "train" and context.node_id == 3:
            raise RuntimeError("out of memory")
        reply = self.inner(message, context)
        if kind == "train" and context.node_id == 2:
            reply.content.config_records["meta"]["round"] = 99
        return reply


class Lossy(LocalGrid):
    """Loses node 4's train replies (a reply that never arrives before the timeout)."""

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = super().pull_messages(message_ids)
        return [
            r
            for r in replies
            if not (r.metadata.src_node_id == 4 and r.metadata.message_type == "train")
        ]


def _events(app: ClientApp, grid_cls: type[LocalGrid] = LocalGrid) -> list[list[dict[str, object]]]:
    grid = grid_cls(app, [{"partition-id": i} for i in range(CFG.data.num_clients)])
    exp = build(codec.config_from_text(codec.config_to_text(CFG)))
    result = AlgorithmStrategy(exp, timeout=5).run(grid)
    return [r.events for r in result.history.records]


def test_stale_replies_are_rejected_and_crashed_apps_fail() -> None:
    for events in _events(Tampering()):
        by_cid = {e["cid"]: e for e in events}
        assert by_cid[1]["outcome"] == "rejected" and "round 99" in str(by_cid[1]["reason"])
        assert by_cid[2]["outcome"] == "failed" and "out of memory" in str(by_cid[2]["reason"])
        assert sorted(by_cid) == [1, 2]


def test_missing_replies_count_as_failed() -> None:
    for events in _events(make_client_app(), Lossy):
        assert events == [{"cid": 3, "outcome": "failed", "reason": "no reply in 5s"}]
