"""One real Deployment Engine run on 127.0.0.1: TLS, SuperNode authentication, 3 SuperNodes.

Real components as separate processes (``ilora.flower.loopback``): a SuperLink with the trial
certificates of ``ilora flower certs`` and ``--enable-supernode-auth``; three registered
SuperNodes, one per client of a 3-client smoke config with mixed ranks (``partition-id`` and
``rank`` from ``--node-config``); ``flwr run`` of the app ``ilora flower new`` writes. The run's
history must equal the embedded engine's, round by round, on the same config with the ranks the
SuperNodes named (which differ from the app config's rank policy), and a fourth
SuperNode whose key was never registered must be refused. Every file lives under ``tmp_path``
(FLWR_HOMEs included), ports are picked at run time, and every process is ended in ``finally``.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest

from ilora import config as config_mod
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.flower.app import write_app
from ilora.flower.certs import make_trial_credentials
from ilora.flower.loopback import HOST, LoopbackDeployment

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


def _history(path: Path) -> list[dict[str, object]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for rec in records:
        rec.pop("wall_s")
    return records


@pytest.mark.slow
@pytest.mark.xdist_group("servers")  # real servers: never beside another test's
def test_deployment_matches_the_embedded_engine(tmp_path: Path) -> None:
    app_cfg = config_mod.load(CONFIG, OVERRIDES)
    assert app_cfg.lora.client_ranks(NODES, app_cfg.seed) != RANKS  # so the node config matters
    explicit = [*OVERRIDES, "lora.rank_policy=explicit", f"lora.ranks={RANKS}".replace(" ", "")]
    cfg = config_mod.load(CONFIG, explicit)  # the embedded engine with the nodes' ranks
    assert cfg.data.num_clients == NODES and len(set(RANKS)) > 1  # mixed ranks
    creds = make_trial_credentials(tmp_path / "certs", nodes=NODES + 1, days=1)
    app = tmp_path / "app"
    write_app(app, Path(CONFIG), OVERRIDES)
    out = tmp_path / "run"
    with LoopbackDeployment(tmp_path / "deployment", creds) as dep:
        dep.start_superlink()
        peer = _tls_peer(dep.port, creds.ca)
        assert ("IP Address", HOST) in peer["subjectAltName"]  # type: ignore[operator]
        node_ids = dep.register(pub for _, pub in creds.node_keys[:NODES])
        assert len(set(node_ids)) == NODES and min(node_ids) > 0
        for i, rank in enumerate(RANKS):  # node i holds client i at the rank it names
            dep.start_supernode(f"node-{i}", creds.node_keys[i][0], f"partition-id={i} rank={rank}")
        dep.start_supernode("stranger", creds.node_keys[NODES][0], "partition-id=0")
        dep.run(app, f'out="{out}"', timeout=900)
        stranger = dep.wait_exit("stranger", timeout=120)
        stranger_log = dep.log_tail("stranger")
    assert stranger not in (None, 0), stranger_log
    assert "Failed to activate SuperNode" in stranger_log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == cfg.fed.rounds
    embedded = run(cfg, exp=build(cfg))
    want = [json.loads(json.dumps(r.to_json(), sort_keys=True)) for r in embedded.history.records]
    for rec in want:
        rec.pop("wall_s")
    assert _history(out / "history.jsonl") == want  # accuracy, loss, bytes, counts, every round
    assert summary["final_accuracy"] == embedded.history.final["accuracy"]
