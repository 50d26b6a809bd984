"""One real Deployment Engine run on 127.0.0.1: TLS, SuperNode authentication, 3 SuperNodes.

Real components as separate processes (``ilora.flower.loopback``): ``ilora flower superlink``
with the trial certificates of ``ilora flower certs`` and ``--enable-supernode-auth``; three
SuperNodes the operator registered, one per client of a 3-client smoke config with mixed ranks
(``partition-id`` and ``rank`` from ``--node-config``), each with its long-lived ``ilora flower
worker``; ``flwr run`` of the app ``ilora flower new`` writes. The run's history must equal the
embedded engine's, round by round, on the same config with the ranks the SuperNodes named
(which differ from the app config's rank policy).

The SuperNodes reach the SuperLink as another machine would: through a relay whose outgoing
side is 127.0.0.2, so the SuperLink sees a peer that is not its operator. Through the same relay
an attacker who holds only the CA certificate tries to register a key of its own and to list
the runs (both refused), and starts a SuperNode with that key (refused). Every file lives under
``tmp_path`` (FLWR_HOMEs included), ports are picked at run time, every process is ended on exit.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from pathlib import Path

import pytest

from ilora import config as config_mod
from ilora.engine.setup import build
from ilora.engine.simulation import RoundFailedError
from ilora.engine.simulation import run
from ilora.flower.app import write_app
from ilora.flower.certs import make_trial_credentials
from ilora.flower.loopback import HOST
from ilora.flower.loopback import LoopbackDeployment
from ilora.flower.superlink import OperatorOnly

CONFIG = "configs/smoke.yaml"
OVERRIDES = ["data.num_clients=3", "fed.rounds=2"]  # the app's config: ranks 2, 4, 2 (cycle)
RANKS = [4, 2, 4]  # what the SuperNodes say on their command lines, overriding the config's
NODES = len(RANKS)


def _tls_peer(port: int, ca: Path) -> dict[str, object]:
    """Return the SuperLink's certificate as seen by a client that trusts only ``ca``."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    return dict(cert)


class RemotePeer:
    """A TCP relay 127.0.0.1:``port`` → 127.0.0.1:``target`` that connects from ``source``.

    The SuperLink sees every connection made through it as coming from ``source``
    (127.0.0.2): another machine, not the operator's 127.0.0.1. TLS passes through unchanged.
    """

    def __init__(self, target: int, source: str = "127.0.0.2") -> None:
        self.target, self.source = target, source
        self.server = socket.create_server((HOST, 0))
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
                upstream = socket.create_connection(
                    (HOST, self.target), timeout=10, source_address=(self.source, 0)
                )
            except OSError:
                return  # closed
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.server.close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.mark.parametrize(
    ("path", "peer", "allowed"),
    [
        ("/v1/fleet/pull-messages", "203.0.113.9", True),  # the Fleet API: any peer
        ("/health", "203.0.113.9", True),
        ("/v1/control/list-runs", "127.0.0.1", True),  # the operator
        ("/v1/control/list-runs", "::ffff:127.0.0.1", True),
        ("/v1/control/register-node", "127.0.0.2", False),  # anyone else
        ("/v1/control/list-runs", "203.0.113.9", False),
        ("/v1/runtime/acquire-task", "10.0.0.5", False),
        ("/v1/fleetx/anything", "10.0.0.5", False),
    ],
)
def test_only_the_operator_reaches_the_control_and_runtime_apis(
    path: str, peer: str, allowed: bool
) -> None:
    guard = OperatorOnly(lambda *_: None)  # type: ignore[arg-type,return-value]
    assert guard.allowed({"type": "http", "path": path, "client": (peer, 5000)}) is allowed


def _history(path: Path) -> list[dict[str, object]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for rec in records:
        rec.pop("wall_s")
    return records


@pytest.mark.slow
@pytest.mark.xdist_group("deployment")  # a loopback deployment: one at a time
def test_deployment_matches_the_embedded_engine(tmp_path: Path) -> None:
    app_cfg = config_mod.load(CONFIG, OVERRIDES)
    assert app_cfg.lora.client_ranks(NODES, app_cfg.seed) != RANKS  # so the node config matters
    explicit = [*OVERRIDES, "lora.rank_policy=explicit", f"lora.ranks={RANKS}".replace(" ", "")]
    cfg = config_mod.load(CONFIG, explicit)  # the embedded engine with the nodes' ranks
    assert cfg.data.num_clients == NODES and len(set(RANKS)) > 1  # mixed ranks
    creds = make_trial_credentials(tmp_path / "certs", nodes=NODES + 1, days=1)
    rogue_key, rogue_pub = creds.node_keys[NODES]  # made by the attacker, never registered
    app = tmp_path / "app"
    write_app(app, Path(CONFIG), OVERRIDES)
    out = tmp_path / "run"
    with LoopbackDeployment(tmp_path / "deployment", creds) as dep:
        dep.start_superlink()
        peer = _tls_peer(dep.port, creds.ca)
        assert ("IP Address", HOST) in peer["subjectAltName"]  # type: ignore[operator]
        remote = RemotePeer(dep.port)
        dep.write_cli_config("rogue", remote.port)  # the attacker: the CA certificate only
        register = ["supernode", "register", str(rogue_pub), "loopback"]
        assert dep.flwr("rogue-register", register, home="rogue") != 0
        assert dep.flwr("rogue-ls", ["ls", "loopback"], home="rogue") != 0
        node_ids = dep.register(pub for _, pub in creds.node_keys[:NODES])  # the operator
        assert len(set(node_ids)) == NODES and min(node_ids) > 0
        for i, rank in enumerate(RANKS):  # node i holds client i at the rank it names
            config = f"partition-id={i} rank={rank}"
            dep.start_supernode(f"node-{i}", creds.node_keys[i][0], config, "process", remote.port)
        dep.start_supernode("rogue", rogue_key, "partition-id=0", "subprocess", remote.port)
        dep.run(app, f'out="{out}"', timeout=900)
        assert dep.flwr("operator-ls", ["ls", "loopback"]) == 0
        rogue = dep.wait_exit("rogue", timeout=120)
        logs = {name: dep.log_tail(name, 10**8) for name in ("rogue", "superlink")}
        remote.close()
    assert rogue not in (None, 0), logs["rogue"]
    assert "Failed to activate SuperNode" in logs["rogue"]
    for call in ("register-node", "list-runs"):  # the attacker's calls, refused by the guard
        pattern = rf'127\.0\.0\.2:\d+ - "POST /v1/control/{call} HTTP/1\.1" 403'
        assert re.search(pattern, logs["superlink"]), call
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == cfg.fed.rounds
    embedded = run(cfg, exp=build(cfg))
    want = [json.loads(json.dumps(r.to_json(), sort_keys=True)) for r in embedded.history.records]
    for rec in want:
        rec.pop("wall_s")
    assert _history(out / "history.jsonl") == want  # accuracy, loss, bytes, counts, every round
    assert summary["final_accuracy"] == embedded.history.final["accuracy"]


@pytest.mark.slow
@pytest.mark.xdist_group("deployment")  # a loopback deployment: one at a time
def test_a_stopped_deployed_run_exits_3_with_the_embedded_reason(tmp_path: Path) -> None:
    """``ilora flower run`` of a run whose every update is rejected: exit 3, one line."""
    sets = ["algorithm=ilora-s", "data.num_clients=2"]  # a method whose clients keep state
    sets += ["fed.max_update_norm=0.000001", "fed.min_success=1"]
    cfg = config_mod.load(CONFIG, sets)
    with pytest.raises(RoundFailedError) as embedded:
        run(cfg, exp=build(cfg))
    creds = make_trial_credentials(tmp_path / "certs", nodes=2, days=1)
    app, out = tmp_path / "app", tmp_path / "run"
    write_app(app, Path(CONFIG), sets)
    with LoopbackDeployment(tmp_path / "deployment", creds) as dep:
        dep.start_superlink()
        dep.register(pub for _, pub in creds.node_keys)
        for i, (key, _) in enumerate(creds.node_keys):
            node = f'partition-id={i} state-dir="{tmp_path / f"state-{i}"}"'
            dep.start_supernode(f"node-{i}", key, node, "process")
        code, log = dep.follow(app, f'out="{out}"', timeout=600)
    assert code == 3, log[-3000:]
    reason = str(embedded.value)
    assert reason.startswith("round 1: 0 of 2 sampled clients delivered an accepted update")
    assert log.strip().splitlines()[-1] == f"run failed: {reason}"
    assert "Traceback" not in log
    assert (out / "failure.txt").read_text().strip() == reason
    for i in range(2):  # each node kept its client's state of round 1 on its own disk
        assert len(list((tmp_path / f"state-{i}").glob(f"*/client-{i}/round-00001.state"))) == 1
