"""Checkpoints, ``--resume`` and failed runs of the Flower ``ServerApp`` (in-process grid).

The ServerApp's body (``ilora.flower.server.serve``) runs over ``LocalGrid``; a kill is a
``BaseException`` raised as round 3's train messages leave, so nothing of the ServerApp's own
error handling runs, as under SIGKILL. The SuperNodes here are fresh for the resumed run (as in
a new ``flwr run``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Message

from ilora import config as config_mod
from ilora.engine import checkpoint
from ilora.engine.outputs import CHECKPOINTS
from ilora.engine.setup import build
from ilora.engine.simulation import RoundFailedError, run
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.server import FAILURE, serve

OVERRIDES = ["data.local_test_fraction=0.2", "fed.rounds=4", "eval.final_full=false"]


class Killed(BaseException):
    """The ServerApp process dies (not an ``Exception``: no handler of ours catches it)."""


class DiesInRound(LocalGrid):
    """A grid whose ServerApp is killed when the train messages of round ``at`` leave."""

    def __init__(self, at: int, nodes: int) -> None:
        super().__init__(make_client_app(), [{"partition-id": i} for i in range(nodes)])
        self.at = at

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        if any(
            m.metadata.message_type == "train" and m.metadata.group_id == str(self.at)
            for m in batch
        ):
            raise Killed
        return super().push_messages(batch)


def _grid(n: int) -> LocalGrid:
    return LocalGrid(make_client_app(), [{"partition-id": i} for i in range(n)])


def _lines(directory: Path) -> list[dict[str, object]]:
    rows = [json.loads(x) for x in (directory / "history.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_s")
    return rows


@pytest.mark.parametrize("name", ["fedit", "ilora"])
def test_a_killed_server_app_resumes_bitwise(tmp_path: Path, name: str) -> None:
    cfg = config_mod.load("configs/smoke.yaml", [f"algorithm={name}", *OVERRIDES])
    whole, part = tmp_path / "whole", tmp_path / "part"
    serve(_grid(cfg.data.num_clients), cfg, whole, 30.0, resume=False)
    with pytest.raises(Killed):
        serve(DiesInRound(3, cfg.data.num_clients), cfg, part, 30.0, resume=False)
    assert not (part / "summary.json").exists()
    ckpt, _ = checkpoint.load_latest(part / CHECKPOINTS)
    assert ckpt is not None and ckpt.round == 2
    serve(_grid(cfg.data.num_clients), cfg, part, 30.0, resume=True)
    assert _lines(part) == _lines(whole)
    for f in sorted((whole / "adapter").iterdir()):
        assert (part / "adapter" / f.name).read_bytes() == f.read_bytes(), f.name
    assert [r["round"] for r in json.loads((part / "manifest.json").read_text())["resumed"]] == [2]
    embedded = [r.to_json() for r in run(cfg, exp=build(cfg)).history.records]
    for r in embedded:
        r.pop("wall_s")
    assert json.loads(json.dumps(embedded, sort_keys=True)) == _lines(whole)


def test_a_failed_round_names_its_reason_and_a_checkpoint_that_exists(tmp_path: Path) -> None:
    cfg = config_mod.load(
        "configs/smoke.yaml", [*OVERRIDES, "faults.crash=0.5", "seed=0", "fed.rounds=3"]
    )  # seed 0: round 1 keeps all 4 clients, round 2 none
    out = tmp_path / "run"
    serve(_grid(cfg.data.num_clients), cfg, out, 30.0, resume=False)  # returns: no traceback
    reason = (out / FAILURE).read_text().strip()
    assert "\n" not in reason and reason.startswith("round 2: 0 of 4 sampled clients")
    assert reason.endswith(
        f"the checkpoint of round 1 is intact (ilora flower simulate --resume {out})"
    )
    assert checkpoint.path_of(out / CHECKPOINTS, 1).is_file()
    with pytest.raises(RoundFailedError) as embedded:
        run(cfg, exp=build(cfg), on_checkpoint=lambda c: None)
    assert str(embedded.value).split("; the checkpoint")[0] == reason.split("; the checkpoint")[0]
