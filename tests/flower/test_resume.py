"""Checkpoints, ``--resume`` and failed runs of the Flower ``ServerApp`` (in-process grid).

The ServerApp's body (``ilora.flower.server.serve``) runs over ``LocalGrid``; a kill is a
``BaseException`` raised once the nodes have trained in round 3 (their replies are being
collected), so nothing of the ServerApp's own error handling runs, as under SIGKILL, and the
nodes' state is a round ahead of the server's last checkpoint. The SuperNodes here are fresh for
the resumed run (as in a new ``flwr run``): what a method's clients keep between rounds
survives only in their state directory (``flower.nodestate``), under the run directory as for
``ilora flower simulate``. Methods: stateless (FedIT, ILoRA), a control variate per client
(ILoRA-S) and personal factors (FedSA-LoRA).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import test_simulation_engine as ray  # the Ray runs' helpers, beside this file
import torch
from flwr.app import Message

from ilora import config as config_mod
from ilora.engine import checkpoint
from ilora.engine.outputs import CHECKPOINTS
from ilora.engine.outputs import RunWriter
from ilora.engine.setup import build
from ilora.engine.simulation import RoundFailedError
from ilora.engine.simulation import run
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.nodestate import NodeState
from ilora.flower.server import FAILED_PREFIX
from ilora.flower.server import FAILURE
from ilora.flower.server import NODE_STATE
from ilora.flower.server import RUN_KEY
from ilora.flower.server import serve

OVERRIDES = ["data.local_test_fraction=0.2", "fed.rounds=4", "eval.final_full=false"]


class Killed(BaseException):
    """The ServerApp process dies (not an ``Exception``: no handler of ours catches it)."""


class DiesInRound(LocalGrid):
    """A grid whose ServerApp is killed when round ``at``'s train replies are collected."""

    def __init__(self, at: int, nodes: int, state_dir: Path | None) -> None:
        super().__init__(make_client_app(state_dir), [{"partition-id": i} for i in range(nodes)])
        self.at, self.trained = at, False

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        self.trained = any(
            m.metadata.message_type == "train" and m.metadata.group_id == str(self.at)
            for m in batch
        )
        return super().push_messages(batch)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        if self.trained:  # the nodes trained (and saved their state): the server dies
            raise Killed
        return super().pull_messages(message_ids)


def _grid(n: int, state_dir: Path | None = None) -> LocalGrid:
    return LocalGrid(make_client_app(state_dir), [{"partition-id": i} for i in range(n)])


def _key(run: Path) -> str:
    return str(json.loads((run / "manifest.json").read_text())[RUN_KEY])


def _lines(directory: Path) -> list[dict[str, object]]:
    rows = [json.loads(x) for x in (directory / "history.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_s")
    return rows


@pytest.mark.parametrize(
    ("name", "fraction"),  # ILoRA-S: clients sampled in some rounds only, evaluated in all
    [("fedit", 1.0), ("ilora", 1.0), ("ilora-s", 0.5), ("fedsa-lora", 1.0)],
)
def test_a_killed_server_app_resumes_bitwise(tmp_path: Path, name: str, fraction: float) -> None:
    extra = [f"algorithm={name}", f"fed.fraction={fraction}"]
    cfg = config_mod.load("configs/smoke.yaml", [*extra, *OVERRIDES])
    n = cfg.data.num_clients
    whole, part = tmp_path / "whole", tmp_path / "part"
    serve(_grid(n, whole / NODE_STATE), cfg, whole, 30.0, resume=False)
    with pytest.raises(Killed):
        serve(DiesInRound(3, n, part / NODE_STATE), cfg, part, 30.0, resume=False)
    assert not (part / "summary.json").exists()
    ckpt, _ = checkpoint.load_latest(part / CHECKPOINTS)
    assert ckpt is not None and ckpt.round == 2 and ckpt.store == {}  # states stay on the nodes
    serve(_grid(n, part / NODE_STATE), cfg, part, 30.0, resume=True)
    assert _lines(part) == _lines(whole)
    for f in sorted((whole / "adapter").iterdir()):
        assert (part / "adapter" / f.name).read_bytes() == f.read_bytes(), f.name
    assert [r["round"] for r in json.loads((part / "manifest.json").read_text())["resumed"]] == [2]
    if build(cfg).algorithm.stateful_clients:  # and the clients' own states, bit for bit
        for cid in range(n):
            a = NodeState(whole / NODE_STATE, _key(whole), cid).load(cfg.fed.rounds)
            b = NodeState(part / NODE_STATE, _key(part), cid).load(cfg.fed.rounds)
            assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
            assert bool(a) is (name in ("ilora-s", "fedsa-lora"))  # ILoRA keeps none after all
    embedded = [r.to_json() for r in run(cfg, exp=build(cfg)).history.records]
    for r in embedded:
        r.pop("wall_s")
    assert json.loads(json.dumps(embedded, sort_keys=True)) == _lines(whole)


@pytest.mark.parametrize("kept", ["elsewhere", "in memory"])
def test_nodes_without_the_clients_state_refuse_to_resume_in_one_line(
    tmp_path: Path, kept: str
) -> None:
    cfg = config_mod.load("configs/smoke.yaml", ["algorithm=ilora-s", *OVERRIDES, "fed.rounds=3"])
    n, out = cfg.data.num_clients, tmp_path / "run"
    with pytest.raises(Killed):
        serve(DiesInRound(2, n, out / NODE_STATE), cfg, out, 30.0, resume=False)
    state_dir = tmp_path / "other" if kept == "elsewhere" else None
    serve(_grid(n, state_dir), cfg, out, 30.0, resume=True)  # returns: no traceback
    reason = (out / FAILURE).read_text().strip()
    assert "\n" not in reason
    assert re.match(r"node \d refused the handshake: NodeStateError: ", reason), reason
    if kept == "elsewhere":
        assert re.search(r"client \d has no saved state of run [0-9a-f]{32} in ", reason)
        assert "cannot resume after round 1 bitwise" in reason
    else:
        assert re.search(r"keeps client \d's state between rounds, but this node keeps", reason)
        assert "start the SuperNode with --node-config 'state-dir=\"DIR\"'" in reason
    assert not (out / "summary.json").exists()


def test_a_failed_round_names_its_reason_and_a_checkpoint_that_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config_mod.load(
        "configs/smoke.yaml", [*OVERRIDES, "faults.crash=0.5", "seed=0", "fed.rounds=3"]
    )  # seed 0: round 1 keeps all 4 clients, round 2 none
    out = tmp_path / "run"
    serve(_grid(cfg.data.num_clients), cfg, out, 30.0, resume=False)  # returns: no traceback
    reason = (out / FAILURE).read_text().strip()
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"{FAILED_PREFIX}{reason}"
    assert "\n" not in reason and reason.startswith("round 2: 0 of 4 sampled clients")
    assert reason.endswith(
        f"the checkpoint of round 1 is intact (ilora flower simulate --resume {out})"
    )
    assert checkpoint.path_of(out / CHECKPOINTS, 1).is_file()
    with pytest.raises(RoundFailedError) as embedded:
        run(cfg, exp=build(cfg), on_checkpoint=lambda c: None)
    assert str(embedded.value).split("; the checkpoint")[0] == reason.split("; the checkpoint")[0]


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # a Ray cluster: one at a time
@pytest.mark.parametrize(
    "sets", [["algorithm=ilora-s", "fed.fraction=0.5"], ["algorithm=fedsa-lora"]]
)
def test_a_killed_simulation_resumes_bitwise(tmp_path: Path, sets: list[str]) -> None:
    """``ilora flower simulate`` SIGKILLed (Ray included) after a checkpoint, then ``--resume``."""
    overrides = [*sets, "data.local_test_fraction=0.2", "fed.rounds=3"]
    out = tmp_path / "run"
    proc = ray._start(
        "configs/smoke.yaml", *(a for o in overrides for a in ("--set", o)), "--out", str(out)
    )
    first = out / CHECKPOINTS / "round-00001.ckpt"
    deadline = time.monotonic() + 300
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ray._kill(proc)  # SIGKILL to the whole group: the ServerApp, Ray and its workers
    assert first.is_file() and not (out / "summary.json").exists()
    resumed = ray._start("--resume", str(out))
    log = ray._finish(resumed)
    assert resumed.returncode == 0, log[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["round"] for r in manifest["resumed"]][0] in (1, 2)
    cfg = config_mod.load("configs/smoke.yaml", overrides)
    whole = tmp_path / "whole"  # the uninterrupted run (bitwise Flower's: test_parity.py)
    with RunWriter(whole, cfg) as writer:
        writer.finish(run(cfg, on_round=writer.on_round, exp=build(cfg)))
    assert _lines(out) == _lines(whole)
    for f in sorted((whole / "adapter").iterdir()):
        assert (out / "adapter" / f.name).read_bytes() == f.read_bytes(), f.name
