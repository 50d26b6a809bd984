"""``ilora bench engine`` on the smoke config: real overhead and memory measurements."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from bench_cli import quick_bench
from bench_cli import rows
from typer.testing import CliRunner

from ilora import config as config_mod
from ilora.cli import app
from ilora.engine.setup import build
from ilora.lora.state import adapted

pytestmark = pytest.mark.slow  # a real benchmark run in the module fixture
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_bench(
        tmp_path_factory, "engine", "--config", SMOKE, "--algorithms", "fedit,ilora",
        "--rounds", "2", "--repeats", "2", "--memory-config", SMOKE,
        "--memory-set", "train.batch_size=8", "--clients", "4,8", "--sampled", "2",
        "--scale-clients", "20,60", "--scale-sampled", "3",
    )  # fmt: skip


def test_overhead_rows_are_real_round_times(bench_dir: Path) -> None:
    got = rows(bench_dir / "overhead.csv")
    keys = {(r["algorithm"], int(r["repeat"]), int(r["round"])) for r in got}
    assert keys == {(a, rep, rnd) for a in ("fedit", "ilora") for rep in (0, 1) for rnd in (1, 2)}
    for kind in ("s", "cpu_s"):
        assert all(float(r[f"engine_{kind}"]) > 0 and float(r[f"bare_{kind}"]) > 0 for r in got)
    assert all(r["sampled"] == "4" and r["steps"] == "5" for r in got)  # smoke: 4 clients, 5 steps


def test_memory_rows_per_client_count(bench_dir: Path) -> None:
    got = rows(bench_dir / "memory.csv")
    assert [int(r["clients"]) for r in got] == [4, 8]
    for r in got:
        assert int(r["sampled_per_round"]) == 2 and int(r["rounds"]) == 1
        peak, rounds = int(r["peak_rss_bytes"]), int(r["peak_rss_rounds_bytes"])
        assert peak >= rounds >= int(r["rss_after_build_bytes"]) > 10 * 2**20


def test_memory_reports_model_and_adapter_bytes(bench_dir: Path) -> None:
    cfg = config_mod.load(
        SMOKE, ["data.num_clients=4", "data.partition=iid", "data.partition_args={}"]
    )
    model = build(cfg).model
    params = sum(p.numel() * 4 for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )
    head = sum(p.numel() * 4 for n, p in model.named_parameters() if n.startswith("classifier"))
    per_rank = sum(4 * (layer.d_in + layer.d_out) for layer in adapted(model).values())
    adapter = statistics.fmean(r * per_rank + head for r in (2, 4))  # smoke ranks cycle [2, 4]
    for r in rows(bench_dir / "memory.csv"):
        assert int(r["model_bytes"]) == params
        assert float(r["adapter_bytes"]) == pytest.approx(adapter)


def test_scale_rows_per_client_count_and_store(bench_dir: Path) -> None:
    got = rows(bench_dir / "scale" / "scale.csv")
    assert [(int(r["clients"]), r["store"]) for r in got] == [
        (n, s) for n in (20, 60) for s in ("memory", "disk")
    ]
    for r in got:
        assert int(r["sampled_per_round"]) == 3 and int(r["rounds"]) == 2
        assert float(r["round_cpu_s_median"]) > 0 and float(r["round_s_median"]) > 0
        assert int(r["peak_rss_bytes"]) >= int(r["peak_rss_rounds_bytes"]) > 10 * 2**20
        assert float(r["state_bytes_per_client"]) > 0  # every client was given its state
    scale_meta = json.loads((bench_dir / "scale" / "meta.json").read_text())
    assert scale_meta["plan"]["scale_clients"] == [20, 60]
    assert scale_meta["scale_workload"]["algorithm"] == "ilora-s"


def test_only_the_parts_asked_for_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "engine", "--parts", "speed", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--parts" in result.output


def test_meta(bench_dir: Path) -> None:
    meta = json.loads((bench_dir / "meta.json").read_text())
    assert meta["quick"] is True and meta["plan"]["clients"] == [4, 8]


def test_bad_client_count_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "engine", "--clients", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--clients" in result.output
