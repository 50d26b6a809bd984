"""Accountings after a run read what the run did, even when its client sampling was secret.

The failure (issue 17): under DP noise the engine samples from a secret seed, but the fault
accounting and the byte check rebuilt the sample from ``cfg.seed``, so they silently counted
clients the run never sampled. The secret seed is pinned here (``secrets.randbits``) so that
the sample rebuilt from ``cfg.seed`` is known to differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ilora import config
from ilora.bench import commcheck
from ilora.bench import faults_rows
from ilora.bench.runner import read_history
from ilora.bench.runner import run_to_dir
from ilora.engine import faults
from ilora.engine import sampling

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
SECRET = 7  # the pinned "secret" sampling seed; config seed 0 samples other clients
DP = [
    "algorithm=fedit",
    "fed.weighting=uniform",
    "dp.clip_norm=0.05",
    "dp.noise_multiplier=1",
    "fed.fraction=0.5",
    "fed.rounds=3",
    "fed.min_success=0",
]
FAULTS = ["faults.dropout_before=0.3", "faults.nan=0.3"]
OUTCOME = {"dropout_before": 1, "nan": 2, "honest": 3}  # failed, rejected, accepted


def _table(cfg: config.ExperimentConfig, seed: int) -> dict[str, list[int]]:
    """Return the accounting of the clients ``seed`` samples (independent of the engine)."""
    table: dict[str, list[int]] = {}
    for r in range(1, cfg.fed.rounds + 1):
        for cid in sampling.sample_clients(range(cfg.data.num_clients), 0.5, seed, r):
            kind = faults.draw(cfg.faults, cfg.seed, r, cid) or "honest"
            row = table.setdefault(kind, [0, 0, 0, 0])
            row[0] += 1
            row[OUTCOME[kind]] += 1
    return table


@pytest.fixture
def pinned_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ilora.engine.sampling.secrets.randbits", lambda _bits: SECRET)


@pytest.mark.usefixtures("pinned_secret")
def test_fault_accounting_counts_the_clients_a_private_sample_drew(tmp_path: Path) -> None:
    cfg = config.load(SMOKE, [*DP, *FAULTS])
    assert sampling.private_sampling(cfg)
    truth, rebuilt = _table(cfg, SECRET), _table(cfg, cfg.seed)
    assert truth != rebuilt  # the sample rebuilt from cfg.seed is not the one the run drew
    run_to_dir(cfg, tmp_path / "run")
    records = read_history(tmp_path / "run")
    assert faults_rows.accounting(cfg, records) == truth
    # and the records do not name the sampled clients
    assert all("cid" not in e for rec in records for e in rec["events"])
    assert any(rec["events"] for rec in records)


def test_a_private_run_recorded_without_fault_counts_is_refused() -> None:
    cfg = config.load(SMOKE, [*DP, *FAULTS])
    old = {"round": 1, "events": [], "clients": {"sampled": 2, "failed": 0, "rejected": 0}}
    with pytest.raises(config.ConfigError, match="sampling was private"):
        faults_rows.accounting(cfg, [old])


@pytest.mark.usefixtures("pinned_secret")
def test_the_byte_check_refuses_a_private_sample_whose_bytes_depend_on_it(
    tmp_path: Path,
) -> None:
    """Heterogeneous ranks: the bytes depend on who was sampled, which the records keep secret."""
    cfg = config.load(SMOKE, DP)
    run_to_dir(cfg, tmp_path / "run")
    with pytest.raises(config.ConfigError, match="sampling was private"):
        commcheck.check_run(tmp_path / "run", {})


@pytest.mark.usefixtures("pinned_secret")
def test_the_byte_check_of_a_private_sample_with_one_rank_matches(tmp_path: Path) -> None:
    cfg = config.load(SMOKE, [*DP, "lora.ranks=[4]"])
    run_to_dir(cfg, tmp_path / "run")
    history = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert all("cid" not in line for line in history)
    _, measured, expected = commcheck.check_run(tmp_path / "run", {})
    assert measured == expected and len(measured) == 3
    assert json.loads(history[0])["clients"]["sampled"] == 2
