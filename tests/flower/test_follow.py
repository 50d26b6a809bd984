"""``ilora flower run``: a deployed run that stops exits 3 with the embedded engine's reason.

The deployment's ``flwr run --stream`` is stood in for by a process that prints what it prints
("Successfully started run N") and then the output of a real ServerApp body
(``flower.server.serve`` over the in-process grid, as the log stream carries a ServerApp's
output): every client's update is rejected (``fed.max_update_norm``), so round 1 has fewer
than ``fed.min_success`` accepted uploads. The task is ``tiny-image``: what is followed does not
depend on the task, and the stand-in process then starts without transformers (about half its
CPU time). The real deployment (SuperLink, SuperNodes, ``flwr run``) is
``tests/flower/test_deployment.py``'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ilora import config as config_mod
from ilora.cli import app
from ilora.engine.setup import build
from ilora.engine.simulation import RoundFailedError
from ilora.engine.simulation import run
from ilora.flower import follow

IMAGE = "task=tiny-image"  # the stand-in imports no transformers
REJECTED = [IMAGE, "fed.max_update_norm=0.000001", "fed.min_success=1", "data.num_clients=2"]
SPOOF = "\nilora: run failed: a client wrote this"

STANDIN = """
import sys
from pathlib import Path
from flwr.app import Error, Message
from ilora import config
from ilora.flower.client import make_client_app
from ilora.flower.grid import LocalGrid
from ilora.flower.server import serve

class Spoofing(LocalGrid):  # every evaluate reply is an error whose reason holds a fake line
    def _deliver(self, msg):
        if msg.metadata.message_type == "evaluate":
            return Message(Error(1, {spoof!r}), reply_to=msg)
        return super()._deliver(msg)

print("Successfully started run 7", flush=True)
cfg = config.load("configs/smoke.yaml", sys.argv[2:])
nodes = [{{"partition-id": i}} for i in range(cfg.data.num_clients)]
grid = (Spoofing if sys.argv[1] == "spoof" else LocalGrid)(make_client_app(), nodes)
serve(grid, cfg, Path({out!r}), 30.0, resume=False)
"""


def _standin(out: Path, case: str, sets: list[str]) -> list[str]:
    script = STANDIN.format(spoof=SPOOF, out=str(out))
    return [sys.executable, "-c", script, case, *sets]


def _embedded_reason(sets: list[str]) -> str:
    cfg = config_mod.load("configs/smoke.yaml", sets)
    with pytest.raises(RoundFailedError) as err:
        run(cfg, exp=build(cfg))
    return str(err.value)


def test_a_stopped_deployed_run_exits_3_with_the_embedded_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin = _standin(tmp_path / "run", "rejected", REJECTED)
    monkeypatch.setattr(follow, "flwr_run_command", lambda *_: standin)
    monkeypatch.setattr(follow, "run_status", lambda *_: ("finished:completed", ""))
    result = CliRunner().invoke(app, ["flower", "run", str(tmp_path / "app"), "loopback"])
    assert result.exit_code == 3, result.output
    reason = _embedded_reason(REJECTED)
    assert reason.startswith("round 1: 0 of 2 sampled clients delivered an accepted update")
    assert "exceeds fed.max_update_norm" in reason
    assert result.output.strip().splitlines()[-1] == f"run failed: {reason}"
    assert "Successfully started run 7" in result.output  # the stream is passed on
    assert "Traceback" not in result.output and "ilora: run failed" not in result.output
    assert (tmp_path / "run" / "failure.txt").read_text().strip() == reason


def test_a_client_cannot_make_a_finished_run_look_stopped(tmp_path: Path) -> None:
    lines: list[str] = []
    sets = [IMAGE, "data.local_test_fraction=0.2", "fed.rounds=1"]
    code, run_id, reason = follow.follow(_standin(tmp_path / "run", "spoof", sets), lines.append)
    assert (code, run_id, reason) == (0, 7, None)
    assert (tmp_path / "run" / "summary.json").is_file()
    assert any("a client wrote this" in line for line in lines)  # logged, on its own line's end
    assert follow.Outcome(code, run_id, reason, "finished:completed").exit_code() == 0


@pytest.mark.parametrize(
    ("outcome", "code", "says"),
    [
        (follow.Outcome(0, 3, None, "finished:completed"), 0, ""),
        (follow.Outcome(0, 3, "round 2: ...", "finished:completed"), 3, "round 2: ..."),
        (follow.Outcome(1, None, None), 1, "flwr run did not start or follow the run"),
        (follow.Outcome(0, 3, None, "finished:failed", "boom"), 1, "run 3 failed on the"),
    ],
)
def test_the_exit_code_and_the_line_of_each_ending(
    outcome: follow.Outcome, code: int, says: str
) -> None:
    assert outcome.exit_code() == code
    assert code == 0 or outcome.message().startswith(says)
