"""The embedded engine: determinism, the golden smoke curve, budgets, sampling and weighting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ilora import config
from ilora.engine.history import RoundRecord
from ilora.engine.outputs import RunWriter
from ilora.engine.sampling import num_sampled
from ilora.engine.sampling import sample_clients
from ilora.engine.simulation import run
from ilora.engine.turn import canonical_upload
from ilora.types import Upload

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
GOLDEN = json.loads((ROOT / "tests" / "golden" / "smoke.json").read_text())


@pytest.mark.parametrize("algorithm", sorted(GOLDEN))
def test_smoke_curve_matches_the_golden_file(algorithm: str) -> None:
    """Regenerate with scripts/regen_golden.py only when a change is meant to move the numbers."""
    records = run(config.load(SMOKE, [f"algorithm={algorithm}"])).history.records
    assert len(records) == len(GOLDEN[algorithm])
    for rec, want in zip(records, GOLDEN[algorithm], strict=True):
        for key, value in want.items():
            assert rec.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (rec.round, key)


def _run_dir(tmp: Path, name: str) -> Path:
    cfg = config.load(SMOKE, ["algorithm=ilora-s", "fed.fraction=0.5", "fed.rounds=3"])
    writer = RunWriter(tmp / name, cfg)
    writer.finish(run(cfg, on_round=writer.on_round))
    return tmp / name


def test_same_seed_gives_bitwise_identical_summary_and_adapter(tmp_path: Path) -> None:
    a, b = _run_dir(tmp_path, "a"), _run_dir(tmp_path, "b")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("wall_s"), sb.pop("wall_s")
    assert sa == sb
    for name in ("adapter_model.safetensors", "ilora_residual.safetensors"):
        assert (a / "adapter" / name).read_bytes() == (b / "adapter" / name).read_bytes()
    strip = [
        {k: v for k, v in json.loads(x).items() if k != "wall_s"}
        for x in (a / "history.jsonl").read_text().splitlines()
    ]
    again = [
        {k: v for k, v in json.loads(x).items() if k != "wall_s"}
        for x in (b / "history.jsonl").read_text().splitlines()
    ]
    assert strip == again


def test_a_different_seed_changes_the_run() -> None:
    a = run(config.load(SMOKE, ["fed.rounds=1"])).history.records[0].metrics
    b = run(config.load(SMOKE, ["fed.rounds=1", "seed=1"])).history.records[0].metrics
    assert a["train_loss"] != b["train_loss"]


def test_centralized_gets_the_federated_step_budget() -> None:
    seen: list[RoundRecord] = []
    cfg = config.load(SMOKE, ["algorithm=centralized", "fed.rounds=1", "fed.fraction=0.5"])
    run(cfg, on_round=seen.append)
    assert seen[0].clients["sampled"] == 1
    # 2 of 4 clients sampled x 5 steps = 10 pooled steps: the upload count is one client
    assert seen[0].bytes_up == seen[0].bytes_down


def test_sampling_is_seeded_sorted_and_sized() -> None:
    cids = list(range(10))
    a = sample_clients(cids, 0.3, seed=1, rnd=4)
    assert a == sample_clients(cids, 0.3, seed=1, rnd=4) and a == sorted(a) and len(a) == 3
    assert sample_clients(cids, 1.0, 0, 1) == cids
    assert num_sampled(10, 0.01) == 1
    rounds = {tuple(sample_clients(cids, 0.3, 1, r)) for r in range(1, 20)}
    assert len(rounds) > 5


def test_uniform_weighting_sets_every_weight_to_one() -> None:
    up = Upload({"a": torch.ones(2).t()}, weight=37.0)
    assert canonical_upload(up, "uniform").weight == 1.0
    assert canonical_upload(up, "examples").weight == 37.0


def test_local_test_split_is_a_seeded_disjoint_cover() -> None:
    import numpy as np

    from ilora.config import ConfigError
    from ilora.engine.shares import split_local

    idx = np.arange(10, 30)
    train, test = split_local(idx, 0.25, seed=0, cid=3)
    assert len(test) == 5 and sorted([*train, *test]) == list(idx)
    again = split_local(idx, 0.25, seed=0, cid=3)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert len(split_local(idx, 0.0, 0, 3)[1]) == 0
    with pytest.raises(ConfigError, match="leaves none"):
        split_local(idx[:1], 0.9, 0, 3)


def test_every_method_gets_personalized_metrics_when_clients_hold_test_shares() -> None:
    for algorithm in ("ilora", "centralized"):
        cfg = config.load(
            SMOKE, [f"algorithm={algorithm}", "data.local_test_fraction=0.2", "fed.rounds=1"]
        )
        assert "personal_accuracy" in run(cfg).history.records[0].metrics


def test_personal_evaluation_uses_fixed_subsets_per_round_and_all_shares_at_the_end() -> None:
    from ilora.engine.setup import build
    from ilora.engine.simulation import personal_tests

    cfg = config.load(SMOKE, ["data.local_test_fraction=0.3", "eval.subset=20"])
    exp = build(cfg)
    total = sum(len(t) for t in exp.local_tests)
    assert total > 40
    per_round = personal_tests(exp, full=False)
    sizes = [len(t) for t in per_round]
    assert abs(sum(sizes) - 20) <= len(sizes) and all(n >= 1 for n in sizes)
    assert [t.labels.tolist() for t in per_round] == [
        t.labels.tolist() for t in personal_tests(exp, False)
    ]
    assert sum(len(t) for t in personal_tests(exp, full=True)) == total


def test_a_diverging_run_warns_and_stop_on_divergence_exits_3(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ilora.cli import app

    out = tmp_path / "run"
    sets = ["train.head_lr=3", "fed.stop_on_divergence=true", "fed.rounds=2"]
    args = ["run", str(SMOKE), "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "run failed: ilora diverged in round 1" in text and "lower train.lr" in text
    assert "no checkpoint was written yet" in text  # round 1 is not checkpointed
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [r.get("diverged") for r in rows] == [1.0]
    fedit = run(config.load(SMOKE, ["algorithm=fedit", "train.head_lr=3", "fed.rounds=2"]))
    assert all(r.metrics["diverged"] == 1.0 for r in fedit.history.records)  # warns, goes on


def test_the_divergence_hint_names_the_orthonormal_b_only_for_ilora_qr_init(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hints = {}
    for init in ("qr", "lora"):
        sets = ["algorithm=ilora", f"algorithm_args.init={init}", "train.head_lr=3", "fed.rounds=1"]
        run(config.load(SMOKE, sets))
        hints[init] = capsys.readouterr().err
    assert all("ilora diverged in round 1" in text for text in hints.values())
    assert "orthonormal B" in hints["qr"] and "orthonormal B" not in hints["lora"]
