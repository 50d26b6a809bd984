"""Benchmark ILoRA server aggregation of one layer: factor space vs the dense forms.

One ``dim x dim`` layer (default 4096), ``--clients`` clients (12) whose ranks cycle over
``--ranks`` (4,8,16,32: Σr = 180), random float32 factors from a seeded ``torch.Generator`` and
example counts varying per client. Three methods, timed interleaved in one process (one untimed
warm-up each, then ``--repeats`` rounds of A, B, C so machine noise hits all of them):

* ``factor_svd``: ``ILoRA().aggregate`` (``redistribute="svd"``: QR of ``B_c``, SVD of the core);
* ``qr_literal``: ``ILoRA(redistribute="qr_literal").aggregate`` (dense ``ΔW``, dense QR);
* ``dense_svd``: reference FlexLoRA-style path: dense float64 ``ΔW = Σ p_k s_k B_k A_k``,
  ``torch.linalg.svd(ΔW, full_matrices=False)`` truncated to ``r_max``.

Peak extra memory: a fresh child process per method (``--only METHOD``, glibc's mmap threshold
fixed at 64 KiB so freed tensors leave RSS) builds the inputs, warms up once, resets the RSS
high-water mark (``/proc/self/clear_refs``) and reports the growth of ``VmHWM`` around one call.
``VmHWM`` is ``ru_maxrss`` without what Linux carries over from the parent across fork + exec.
MB = 2**20 bytes; the ratio divides by the stacked float64 ``B_c``, ``A_c``. The script also
checks that the factor-space product equals the truncated dense SVD to 1e-6 (relative Frobenius).

Run: ``.venv/bin/python benchmarks/aggregation.py [--repeats 5] [--threads 2] [--out DIR]``;
``--quick`` is a ~10 s smoke run (dim 1024, 2 repeats).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ilora.algorithms.ilora import ILoRA, ILoRAState
from ilora.lora.linalg import stack
from ilora.lora.spec import LoRASpec
from ilora.types import ClientInfo, RoundInfo, Upload

Inputs = tuple[ILoRAState, dict[int, Upload]]
RND = RoundInfo(1, 0)
LABELS = {
    "factor_svd": "factor space (svd)",
    "qr_literal": "dense QR (qr_literal)",
    "dense_svd": "dense SVD (reference)",
}


def build_inputs(dim: int, clients: int, ranks: list[int], seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    infos, uploads = [], {}
    for k in range(clients):
        r, n = ranks[k % len(ranks)], int(torch.randint(50, 1000, (1,), generator=g))
        B = torch.randn(dim, r, generator=g) / dim**0.5  # (d_out, r)
        A = torch.randn(r, dim, generator=g) / dim**0.5  # (r, d_in)
        infos.append(ClientInfo(k, r, n))
        uploads[k] = Upload({"l.lora_B": B, "l.lora_A": A}, float(n))
    template = {"l.base": torch.zeros(dim, dim)}
    return ILoRA().server_init(template, infos, LoRASpec(alpha=16.0), 0), uploads


def dense_svd(state: ILoRAState, uploads: dict[int, Upload]) -> tuple[torch.Tensor, ...]:
    total = sum(u.weight for u in uploads.values())
    cids = sorted(uploads)
    As = [uploads[c].tensors["l.lora_A"] for c in cids]
    Bs = [uploads[c].tensors["l.lora_B"] for c in cids]
    p = {c: uploads[c].weight / total for c in cids}
    coeffs = [p[c] * state.lora.scale(a.shape[0]) for c, a in zip(cids, As, strict=True)]
    B_c, A_c = stack(Bs, As, coeffs)  # float64 (d_out, Σr), (Σr, d_in)
    dW = B_c @ A_c  # (d_out, d_in), dense on purpose
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    r = state.rank
    return U[:, :r].contiguous(), S[:r].clone(), Vh[:r].contiguous()


METHODS: dict[str, Callable[[ILoRAState, dict[int, Upload]], object]] = {
    "factor_svd": lambda s, u: ILoRA().aggregate(s, u, RND),
    "qr_literal": lambda s, u: ILoRA(redistribute="qr_literal").aggregate(s, u, RND),
    "dense_svd": dense_svd,
}


def peak_rss() -> int:
    """Return the peak RSS in bytes (``VmHWM``; Linux only)."""
    with open("/proc/self/status") as f:
        return int(next(x for x in f if x.startswith("VmHWM:")).split()[1]) * 1024  # kB


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux >= 4.0: VmHWM := VmRSS
        f.write("5")


def child(method: str, inputs: Inputs) -> None:
    fn = METHODS[method]
    fn(*inputs)  # warm-up (lazy LAPACK/thread init), then forget its peak
    gc.collect()
    reset_peak()
    before = peak_rss()
    out = fn(*inputs)
    extra = peak_rss() - before
    del out
    print(json.dumps({"method": method, "extra_bytes": extra}))


def measure_memory(method: str, a: argparse.Namespace) -> int:
    cmd = [sys.executable, __file__, "--only", method, "--dim", str(a.dim)]
    cmd += ["--clients", str(a.clients), "--ranks", a.ranks, "--threads", str(a.threads)]
    # Fixed mmap threshold: freed large blocks go back to the OS, so RSS tracks live tensors
    # (glibc's dynamic threshold would keep the warm-up's blocks resident); no MKL buffer cache.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MKL_DISABLE_FAST_MM": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return int(json.loads(res.stdout.strip().splitlines()[-1])["extra_bytes"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--ranks", default="4,8,16,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="dim 1024, 2 repeats (smoke run)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-aggregation"))
    ap.add_argument("--only", choices=list(METHODS), help="internal: memory of one method")
    a = ap.parse_args()
    if a.quick:
        a.dim, a.repeats = 1024, 2
    torch.set_num_threads(a.threads)
    ranks = [int(r) for r in a.ranks.split(",")]
    inputs = build_inputs(a.dim, a.clients, ranks)
    if a.only:
        child(a.only, inputs)
        return

    command = shlex.join([sys.executable, *sys.argv])
    sum_r = sum(ranks[k % len(ranks)] for k in range(a.clients))
    stacked = (a.dim * sum_r + sum_r * a.dim) * 8
    print(f"$ {command}")
    setup = (
        f"dim {a.dim}, {a.clients} clients, ranks {a.ranks} (Σr {sum_r}, r_max {inputs[0].rank}), "
        f"threads {a.threads}, repeats {a.repeats}, load avg {os.getloadavg()[0]:.2f}, "
        f"torch {torch.__version__}"
    )
    print(setup)

    outputs = {m: fn(*inputs) for m, fn in METHODS.items()}  # untimed warm-up
    U, S, Vh = outputs.pop("dense_svd")  # type: ignore[misc]
    ref = (U * S) @ Vh  # (d_out, d_in) float64: the truncated dense SVD
    errs = {}  # dense float64 check: the Gram-matrix form cannot resolve errors below ~1e-8
    for m, st in outputs.items():
        fac = st.factors  # type: ignore[attr-defined]
        prod = fac["l.lora_B"].double() @ fac["l.lora_A"].double()  # (d_out, d_in)
        errs[m] = float(torch.linalg.norm(prod - ref) / torch.linalg.norm(ref))
    del outputs, U, S, Vh, ref, prod, fac
    err = errs["factor_svd"]
    check = (
        f"correctness: ‖B A (factor space) − trunc_r_max svd(ΔW)‖_F / ‖trunc‖_F = {err:.3e} "
        f"({'OK' if err <= 1e-6 else 'FAIL'}, tol 1e-6); qr_literal: {errs['qr_literal']:.3e}"
    )
    print(check)

    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(a.repeats):  # interleaved: A, B, C, A, B, C, ...
        for m, fn in METHODS.items():
            gc.collect()
            t0 = time.perf_counter()
            out = fn(*inputs)
            times[m].append(time.perf_counter() - t0)
            del out
    del inputs
    gc.collect()
    mem = {m: measure_memory(m, a) for m in METHODS}

    base = statistics.median(times["factor_svd"])
    rows = []  # (method, median, min, max, speed-up, extra bytes, ratio)
    for m, ts in times.items():
        med = statistics.median(ts)
        rows.append((m, med, min(ts), max(ts), med / base, mem[m], mem[m] / stacked))
    header = "| method | median s | min | max | speed-up vs factor space | peak extra MB | "
    lines = [header + "ratio to stacked factors |", "|---|---|---|---|---|---|---|"]
    for m, med, lo, hi, sp, mb, ratio in rows:
        cells = f"{med:.4f} | {lo:.4f} | {hi:.4f} | {sp:.1f}x | {mb / 2**20:.1f} | {ratio:.2f}"
        lines.append(f"| {LABELS[m]} | {cells} |")
    note = (
        f"speed-up = method median / factor-space median; stacked factors = "
        f"{stacked / 2**20:.2f} MB (float64 B_c, A_c); MB = 2**20 bytes; "
        f"load avg at end {os.getloadavg()[0]:.2f}"
    )
    table = "\n".join(lines)
    print(f"\n{table}\n\n{note}")

    a.out.mkdir(parents=True, exist_ok=True)
    text = f"`{command}`\n\n{setup}\n\n{table}\n\n{note}\n\n{check}\n"
    (a.out / "table.md").write_text(text)
    with open(a.out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        cols = "method median_s min_s max_s speedup_vs_factor peak_extra_bytes ratio_to_stacked"
        w.writerow([*cols.split(), "dim", "clients", "sum_r", "threads", "repeats"])
        w.writerows([*r, a.dim, a.clients, sum_r, a.threads, a.repeats] for r in rows)
    print(f"wrote {a.out / 'table.md'} and {a.out / 'results.csv'}")


if __name__ == "__main__":
    main()
