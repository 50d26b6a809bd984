"""``ilora bench throughput``: a quick real run, and the FLOP count against a hand count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bench_cli import quick_bench
from bench_cli import rows
from torch import nn

from ilora.lora.layer import LoRALinear
from ilora.lora.spec import LoRASpec
from ilora.report.throughput import render
from ilora.report.throughput import speedups


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_bench(tmp_path_factory, "throughput", "--compare")


def test_steps_and_matmuls_are_timed_in_both_precisions(bench_dir: Path) -> None:
    steps, matmul = rows(bench_dir / "steps.csv"), rows(bench_dir / "matmul.csv")
    modes = (("fp32", "default"), ("bf16", "default"), ("bf16", "recast"))  # recast: --compare
    assert {(r["workload"], r["precision"], r["variant"], r["repeat"]) for r in steps} == {
        ("tiny-text", p, v, rep) for p, v in modes for rep in ("0", "1")
    }
    for col in ("step_s", "cpu_step_s", "gflops", "cpu_gflops"):
        assert all(float(r[col]) > 0 for r in steps), col
    assert {(r["precision"], r["repeat"]) for r in matmul} == {
        (p, rep) for p in ("fp32", "bf16") for rep in ("0", "1")
    }
    meta = json.loads((bench_dir / "meta.json").read_text())
    flops = meta["workloads"]["tiny-text"]["flops_per_step"]
    assert flops["fp32"] == flops["bf16"] > 0  # the same work in both precisions
    shares = [float(r["share"]) for r in rows(bench_dir / "breakdown.csv")]
    assert sum(shares) == pytest.approx(3.0, abs=0.01)  # each mode's shares sum to 1


def test_the_section_renders_with_ratio_and_plot(bench_dir: Path, tmp_path: Path) -> None:
    section = render(bench_dir, tmp_path)
    assert section.startswith("## Training throughput") and "bf16 speed-up" in section
    assert "| bf16 (recast) |" in section and "cast cache" in section
    evals = rows(bench_dir / "eval.csv")  # the evaluation pass, in every mode and repeat
    assert len(evals) == 6 and all(float(r["cpu_ms_per_example"]) > 0 for r in evals)
    assert "The evaluation pass" in section
    assert (tmp_path / "throughput-gflops.png").is_file()
    steps = rows(bench_dir / "steps.csv")
    cpu = {(r["precision"], r["variant"], r["repeat"]): float(r["cpu_step_s"]) for r in steps}
    paired = [cpu[("fp32", "default", rep)] / cpu[("bf16", "default", rep)] for rep in ("0", "1")]
    assert speedups(steps)["tiny-text"] == pytest.approx(sum(paired) / 2)  # median of two
    cached = [cpu[("bf16", "recast", rep)] / cpu[("bf16", "default", rep)] for rep in ("0", "1")]
    pair = ("bf16 (recast)", "bf16")
    assert speedups(steps, pair=pair)["tiny-text"] == pytest.approx(sum(cached) / 2)


def test_flop_count_of_a_lora_step_matches_a_hand_count() -> None:
    """Frozen base, rank-r adapter, input without gradient: what autograd computes, counted."""
    from torch.utils.flop_counter import FlopCounterMode

    b, d_in, d_out, r = 5, 12, 10, 3
    layer = LoRALinear(nn.Linear(d_in, d_out), LoRASpec(alpha=4.0))
    layer.base.requires_grad_(False)
    layer.set_adapter(torch.randn(r, d_in), torch.randn(d_out, r))
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(b, d_in)).sum().backward()
    forward = 2 * b * d_in * d_out + 2 * b * d_in * r + 2 * b * r * d_out
    backward = 2 * b * r * d_out + 2 * b * r * d_out + 2 * b * d_in * r  # dB, dh, dA; no dx, dW
    assert counter.get_total_flops() == forward + backward


def test_free_matmul_caps_follow_from_the_step_and_the_share() -> None:
    """fp32 0.2 s, bf16 0.1 s with 30% matmul: free matmuls leave 0.07 s, a 2/0.7 speed-up."""
    from ilora.report.throughput import free_matmul_caps

    step = {"workload": "w", "repeat": "0", "variant": "default", "flops_per_step": "7e9"}
    timed = (("fp32", "0.2"), ("bf16", "0.1"))
    steps = [{**step, "precision": p, "cpu_step_s": s} for p, s in timed]
    parts = [
        {"workload": "w", "precision": "bf16", "category": c, "self_s": "1", "share": s}
        for c, s in (("matmul/conv", "0.3"), ("other", "0.7"))
    ]
    speedup, peak_share = free_matmul_caps(parts, steps, bf16_peak=200.0)["w"]
    assert speedup == pytest.approx(2 / 0.7)
    assert peak_share == pytest.approx(7e9 / 0.07 / 1e9 / 200.0)  # 100 GFLOP/s of 200
