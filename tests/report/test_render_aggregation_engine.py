"""The aggregation and engine renderers on hand-written result files (no torch needed)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from ilora.report import aggregation
from ilora.report import engine

PNG = b"\x89PNG\r\n\x1a\n"
AGG_COLUMNS = [
    "method",
    "d",
    "clients",
    "ranks",
    "sum_r",
    "stacked_bytes",
    "upload_bytes",
    "threads",
    "repeat",
    "seconds",
    "peak_extra_bytes",
]


def write_csv(path: Path, columns: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)


def agg_fixture(src: Path) -> None:
    src.mkdir()
    rows: list[list[object]] = []
    times = {
        "ilora": [0.1, 0.2, 0.3],
        "ilora:qr_literal": [9.0, 10.0, 11.0],
        "ilora:dense_svd": [50.0, 40.0, 60.0],
        "fedit": [0.5, 0.5, 0.5],
    }
    stacked = 8 * 2 * 4096 * 180
    for m, ts in times.items():
        for rep, t in enumerate(ts):
            peak = int(1.5 * stacked) if m == "ilora" else 10 * stacked
            rows.append([m, 4096, 12, "4,8,16,32", 180, stacked, 1, 1, rep, t, peak])
            rows.append([m, 1024, 12, "4,8,16,32", 180, stacked // 4, 1, 1, rep, t / 10, 2**20])
            rows.append([m, 1024, 4, "4,8,16,32", 60, stacked // 12, 1, 1, rep, t / 40, 2**20])
    write_csv(src / "aggregation.csv", AGG_COLUMNS, rows)
    write_csv(
        src / "checks.csv",
        ["check", "d", "clients", "rel_error"],
        [["ilora_vs_dense_svd", 4096, 12, 3e-8], ["ilora_vs_dense_svd", 1024, 4, 5e-8]],
    )
    meta = {
        "command": "ilora bench aggregation",
        "quick": False,
        "cpus": 2,
        "plan": {"dims_clients": 12, "clients_dim": 1024, "repeats": 3, "threads": 1},
        "target": {"d": 4096, "clients": 12},
        "ranks": [4, 8, 16, 32],
        "uniform_rank": 16,
    }
    (src / "meta.json").write_text(json.dumps(meta))


def test_aggregation_section_states_the_targets_from_the_data(tmp_path: Path) -> None:
    agg_fixture(tmp_path / "aggregation")
    text = aggregation.render(tmp_path / "aggregation", tmp_path / "img")
    assert text.startswith("## ")
    assert "ilora bench aggregation" in text
    # medians: ilora 0.2, qr_literal 10 (50x), dense_svd 50 (250x); peak 1.5x stacked
    assert "50x faster than the dense QR and 250x faster than the dense SVD" in text
    assert "the >= 40x target is met" in text
    assert "1.50x the stacked float64 factors" in text and "the < 2x target is met" in text
    assert "at most 5.0e-08 over the 2 configurations" in text
    assert "| fedit | 0.0500 | 0.5000 |" in text  # time vs d at 12 clients
    for name in ("time-vs-d", "memory-vs-d", "time-vs-clients"):
        assert f"](img/aggregation-{name}.png)" in text
        assert (tmp_path / "img" / f"aggregation-{name}.png").read_bytes()[:8] == PNG


def test_aggregation_section_says_when_a_target_is_missed(tmp_path: Path) -> None:
    agg_fixture(tmp_path / "aggregation")
    path = tmp_path / "aggregation" / "aggregation.csv"
    lines = path.read_text().splitlines()
    slow = [ln.replace(",0.2,", ",0.5,") if ln.startswith("ilora,4096") else ln for ln in lines]
    path.write_text("\n".join(slow) + "\n")  # ilora median 0.3: qr_literal only 33x
    text = aggregation.render(tmp_path / "aggregation", tmp_path / "img")
    assert "33x faster than the dense QR" in text and "target is NOT met" in text


def test_aggregation_ranks_come_from_meta(tmp_path: Path) -> None:
    agg_fixture(tmp_path / "aggregation")
    meta_path = tmp_path / "aggregation" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["ranks"] = [2, 6]
    meta_path.write_text(json.dumps(meta))
    text = aggregation.render(tmp_path / "aggregation", tmp_path / "img")
    assert "clients' ranks cycling 2, 6, 3 timed calls" in text  # the CSV: no single-rank method
    path = tmp_path / "aggregation" / "aggregation.csv"
    path.write_text(path.read_text().replace('fedit,4096,12,"4,8,16,32"', "fedit,4096,12,16"))
    del meta["ranks"]
    meta_path.write_text(json.dumps(meta))
    text = aggregation.render(tmp_path / "aggregation", tmp_path / "img")
    assert "cycling not recorded (fedit: rank 16 for every client)" in text


def engine_fixture(src: Path) -> None:
    src.mkdir()
    cols = [
        "algorithm",
        "repeat",
        "round",
        "engine_s",
        "bare_s",
        "engine_cpu_s",
        "bare_cpu_s",
        "sampled",
        "steps",
    ]
    rows: list[list[object]] = []
    for rep, (over_a, over_b) in enumerate([(1.02, 1.10), (1.03, 1.08), (1.04, 1.12)]):
        for rnd in (1, 2):
            rows.append(["fedit", rep, rnd, 10 * over_a + 1, 10, 10 * over_a, 10, 3, 8])
            rows.append(["ilora", rep, rnd, 10 * over_b, 10, 10 * over_b, 10, 3, 8])
    write_csv(src / "overhead.csv", cols, rows)
    mcols = [
        "clients",
        "sampled_per_round",
        "rounds",
        "peak_rss_bytes",
        "rss_after_build_bytes",
        "peak_rss_rounds_bytes",
        "model_bytes",
        "adapter_bytes",
        "seconds",
    ]
    mb = 2**20
    write_csv(
        src / "memory.csv",
        mcols,
        [
            [10, 5, 2, 1200 * mb, 900 * mb, 1000 * mb, 90 * mb, 256 * 1024, 60],
            [
                1000,
                5,
                2,
                1300 * mb,
                1000 * mb,
                1000 * mb + 990 * 100 * 1024,
                90 * mb,
                256 * 1024,
                70,
            ],
        ],
    )
    plan = {"config": "configs/demo.yaml", "rounds": 2, "repeats": 3, "threads": 1}
    (src / "meta.json").write_text(json.dumps({"command": "ilora bench engine", "plan": plan}))


def test_engine_section_reads_overhead_and_memory(tmp_path: Path) -> None:
    engine_fixture(tmp_path / "engine")
    text = engine.render(tmp_path / "engine", tmp_path / "img")
    assert text.startswith("## ")
    # CPU medians over repeats: fedit +3.0% (within), ilora +10.0% (above)
    assert "fedit: an engine round costs +3.0% CPU time" in text and "within the 5%" in text
    assert "ilora: an engine round costs +10.0% CPU time" in text and "ABOVE the 5%" in text
    # memory: +100 KiB per added client = 0.391 adapters; 1300 MiB = 1.36 GB, within 4 GB
    assert "+100.0 KiB per added client = +0.391 adapters" in text
    assert "at most one adapter per client" in text
    assert "1000 clients peak at 1.36 GB" in text and "within the 4 GB target" in text
    for name in ("overhead", "memory"):
        assert (tmp_path / "img" / f"engine-{name}.png").read_bytes()[:8] == PNG


SCALE_COLUMNS = [
    "clients",
    "store",
    "sampled_per_round",
    "rounds",
    "round_s_median",
    "round_s_min",
    "round_s_max",
    "round_cpu_s_median",
    "round_cpu_s_min",
    "round_cpu_s_max",
    "peak_rss_bytes",
    "peak_rss_rounds_bytes",
    "rss_after_seed_bytes",
    "state_bytes_per_client",
    "build_s",
    "seed_s",
]


def _scale_row(n: int, store: str, cpu: float, peak_mib: int) -> list[object]:
    peak = peak_mib * 2**20
    return [n, store, 10, 4, 2 * cpu, cpu, 3 * cpu, cpu, 0.9 * cpu, 1.1 * cpu]+ [
        peak, peak - 2**20, peak - 2**21, 8720.0, 5.0, 1.0
    ]  # fmt: skip


def test_engine_section_reads_the_scale_run(tmp_path: Path) -> None:
    engine_fixture(tmp_path / "engine")
    src = tmp_path / "engine" / "scale"
    src.mkdir()
    rows = [
        _scale_row(1000, "disk", 0.40, 500),
        _scale_row(100000, "disk", 0.44, 700),  # 1.10x: flat; 734 MB: within
        _scale_row(1000, "memory", 0.40, 520),
        _scale_row(100000, "memory", 0.80, 4200),  # 2.00x: grows; 4.40 GB: above
    ]
    with (src / "scale.csv").open("w", newline="") as f:
        csv.writer(f).writerows([SCALE_COLUMNS, *rows])
    plan = {"scale_config": "configs/smoke.yaml", "scale_sampled": 10, "scale_rounds": 4}
    (src / "meta.json").write_text(json.dumps({"command": "ilora bench engine", "plan": plan}))
    text = engine.render(tmp_path / "engine", tmp_path / "img")
    assert "disk store: a round at 100,000 registered clients costs 1.10x" in text
    assert "memory store: a round at 100,000 registered clients costs 2.00x" in text
    assert (
        "1.10x the CPU time of one at 1,000 (median rounds): the round time does not grow" in text
    )
    assert "2.00x the CPU time of one at 1,000 (median rounds): the round time GROWS" in text
    assert "disk store peak at 0.73 GB (10^9 bytes) over the whole process, within" in text
    assert "memory store peak at 4.40 GB (10^9 bytes) over the whole process, ABOVE" in text
    assert "8.5 KiB of control variates" in text
    assert "method and partition not recorded" in text  # no scale_workload in this meta.json
    assert (tmp_path / "img" / "engine-scale.png").read_bytes()[:8] == PNG
    work = {"algorithm": "fedit", "partition": "shards", "examples_per_client": 7}
    meta = {"command": "ilora bench engine", "plan": plan, "scale_workload": work}
    (src / "meta.json").write_text(json.dumps(meta))
    text = engine.render(tmp_path / "engine", tmp_path / "img")
    assert "fedit, shards shares of 7 synthetic examples per client" in text


def test_startup_section_compares_before_and_after(tmp_path: Path) -> None:
    from ilora.report import startup

    src = tmp_path / "startup"
    src.mkdir()
    rows = [["tree", "command", "repeat", "seconds", "torch", "transformers"]]
    for rep, (before, after) in enumerate([(3.0, 0.3), (2.0, 0.2), (4.0, 0.4)]):
        rows.append(["before", "--help", rep, before, True, False])
        rows.append(["after", "--help", rep, after, False, False])
        rows.append(["after", "validate x.yaml", rep, 2 * before, True, False])
    with (src / "startup.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    (src / "meta.json").write_text(json.dumps({"command": "c", "plan": {"before": "abc"}}))
    text = startup.render(src, tmp_path / "img")
    assert "| `ilora --help` | 3.00 | torch | 0.30 | neither | 10.0x |" in text
    assert "`ilora validate x.yaml` (6.00 s, imports torch)" in text  # not within the target


def test_renderers_import_no_torch() -> None:
    code = (
        "import sys, ilora.report.aggregation, ilora.report.engine; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
