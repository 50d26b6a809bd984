"""``ilora bench aggregation`` on tiny settings: real measurements in the expected rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_cli import quick_bench
from bench_cli import rows
from typer.testing import CliRunner

from ilora.algorithms.base import ALGORITHMS
from ilora.bench.aggsetup import RANKS
from ilora.bench.aggsetup import UNIFORM_RANK
from ilora.bench.aggsetup import build_inputs
from ilora.bench.aggsetup import methods
from ilora.cli import app

pytestmark = pytest.mark.slow  # a real benchmark run in the module fixture
runner = CliRunner()
D, CLIENTS = 64, (2, 4)
METHODS = ("fedit", "ilora", "ilora:qr_literal", "ilora:dense_svd")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_bench(
        tmp_path_factory, "aggregation", "--dims", str(D), "--clients", "2,4",
        "--clients-dim", str(D), "--methods", ",".join(METHODS), "--repeats", "2",
    )  # fmt: skip


def test_one_row_per_method_setting_and_repeat(bench_dir: Path) -> None:
    got = rows(bench_dir / "aggregation.csv")
    settings = {(D, k) for k in (*CLIENTS, 12)}  # the size sweep runs at 12 clients
    expected = {(m, d, k, rep) for m in METHODS for d, k in settings for rep in (0, 1)}
    assert {(r["method"], int(r["d"]), int(r["clients"]), int(r["repeat"])) for r in got} == (
        expected
    )
    assert len(got) == len(expected)


def test_times_are_positive_and_memory_is_never_negative(bench_dir: Path) -> None:
    got = rows(bench_dir / "aggregation.csv")
    assert all(float(r["seconds"]) > 0 for r in got)
    assert all(int(r["peak_extra_bytes"]) >= 0 for r in got)


def test_memory_of_the_dense_form_is_measured(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A d x d float64 matrix at d = 64 (32 KiB) sits below the workers' 64 KiB mmap threshold and
    # may reuse resident heap pages, so it can add nothing to the RSS. At d = 256 (512 KiB) every
    # such block is mapped fresh: the dense SVD must show at least one of them.
    d = 256
    out = quick_bench(
        tmp_path_factory, "aggregation", "--dims", str(d), "--clients", "2",
        "--clients-dim", str(d), "--methods", "ilora:dense_svd", "--repeats", "1",
    )  # fmt: skip
    dense = [int(r["peak_extra_bytes"]) for r in rows(out / "aggregation.csv")]
    assert dense and min(dense) >= 8 * d * d


def ranks_of(method: str, k: int) -> list[int]:
    hetero = ALGORITHMS.get(method.split(":")[0]).heterogeneous_ranks
    return [RANKS[i % 4] if hetero else UNIFORM_RANK for i in range(k)]


def test_ranks_and_stacked_sizes(bench_dir: Path) -> None:
    for r in rows(bench_dir / "aggregation.csv"):
        ranks = ranks_of(r["method"], int(r["clients"]))
        assert int(r["sum_r"]) == sum(ranks)
        assert int(r["stacked_bytes"]) == 8 * (D + D) * sum(ranks)


def test_upload_bytes_are_the_methods_own_uploads(bench_dir: Path) -> None:
    head = (D * 4 + 4) * 4  # OneLayer's head: (4, d) weight and (4,) bias, float32
    for r in rows(bench_dir / "aggregation.csv"):
        if r["method"] == "fedit":  # A (r, d), B (d, r) and the head per client, float32
            ranks = ranks_of("fedit", int(r["clients"]))
            assert int(r["upload_bytes"]) == sum(4 * rank * 2 * D + head for rank in ranks)


def test_factor_space_matches_the_dense_svd(bench_dir: Path) -> None:
    checks = rows(bench_dir / "checks.csv")
    assert {(int(c["d"]), int(c["clients"])) for c in checks} == {(D, 2), (D, 4), (D, 12)}
    assert all(float(c["rel_error"]) < 1e-6 for c in checks)


def test_meta_records_the_command(bench_dir: Path) -> None:
    meta = json.loads((bench_dir / "meta.json").read_text())
    assert meta["quick"] is True
    assert meta["plan"]["methods"] == list(METHODS)
    assert meta["cpus"] >= 1 and meta["torch"]
    got = rows(bench_dir / "aggregation.csv")  # the report states meta's ranks: the cycle
    assert {r["ranks"] for r in got if r["clients"] == "12"} == {",".join(map(str, meta["ranks"]))}
    assert meta["uniform_rank"] == UNIFORM_RANK


def test_uploads_come_from_each_method_client_path() -> None:
    inputs = build_inputs("ilora-s", D, 6)
    assert sorted(inputs.uploads) == list(range(6))
    for cid, up in inputs.uploads.items():
        r = RANKS[cid % 4]
        assert up.tensors["layer.lora_A"].shape == (r, D)
        assert up.tensors["cv/layer.lora_A"].shape == (r, D)  # ILoRA-S's control variates
    # clients 4 and 5 reuse the tensors of ranks 4 and 8, jittered: never equal
    assert not (
        inputs.uploads[4].tensors["layer.lora_A"] == inputs.uploads[0].tensors["layer.lora_A"]
    ).any()
    assert inputs.uploads[4].weight == inputs.clients[4].num_examples


def test_every_registered_method_is_benchmarked() -> None:
    names = set(methods())
    assert {n for n in ALGORITHMS.names() if not ALGORITHMS.get(n).pooled_data} <= names
    assert {"ilora:qr_literal", "ilora:dense_svd"} <= names


def test_unknown_method_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["bench", "aggregation", "--methods", "fedx", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown methods" in result.output
