"""Render ``results/throughput/`` (``ilora bench throughput``) as a RESULTS.md section.

Reads the bench's CSV files and ``meta.json`` only. Targets of issue 15: a bf16 training step
at least 2.5x faster than fp32 (median over repeats of the paired ratio ``fp32 step s / bf16 step
s``), and the bf16 step at 50% or more of the bf16 matmul peak measured in the same run. Rows of
the ``recast`` variant (``--compare``: bf16 without the frozen layers' cast cache) come beside.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from ilora.report._plot import new_figure
from ilora.report._plot import save_with_legend
from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head

TARGET_SPEEDUP, TARGET_PEAK_SHARE = 2.5, 0.5
PRECISIONS = ("fp32", "bf16")
DEFAULT, RECAST = "default", "recast"


def _by(
    rows: Sequence[Mapping[str, str]], *keys: str
) -> dict[tuple[str, ...], list[dict[str, str]]]:
    out: dict[tuple[str, ...], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(dict(r))
    return out


def _median(rows: Sequence[Mapping[str, str]], col: str) -> float:
    return statistics.median(float(r[col]) for r in rows)


def _variant(r: Mapping[str, str]) -> str:
    return r.get("variant") or DEFAULT  # result files from before ``--compare`` have none


def _mode(r: Mapping[str, str]) -> str:
    """Return the row's precision, with `` (recast)`` for the comparison variant."""
    return r["precision"] if _variant(r) == DEFAULT else f"{r['precision']} ({_variant(r)})"


def _by_mode(rows: Sequence[Mapping[str, str]]) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Return the rows grouped by ``(workload, mode)`` (:func:`_mode`), in first-seen order."""
    out: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        out[(r["workload"], _mode(r))].append(dict(r))
    return out


def speedups(
    steps: Sequence[Mapping[str, str]],
    col: str = "cpu_step_s",
    pair: tuple[str, str] = ("fp32", "bf16"),
) -> dict[str, float]:
    """Return ``{workload: median over repeats of pair[0] / pair[1] step seconds}``.

    ``pair`` names two modes (:func:`_mode`: ``fp32``, ``bf16``, ``bf16 (recast)``); ``col``
    the column timed.
    """
    ratios: dict[str, list[float]] = defaultdict(list)
    for (work, _), rows in _by(steps, "workload", "repeat").items():
        by_mode = {_mode(r): float(r[col]) for r in rows}
        if set(pair) <= set(by_mode):
            ratios[work].append(by_mode[pair[0]] / by_mode[pair[1]])
    return {w: statistics.median(v) for w, v in ratios.items()}


def _row(rows: Sequence[Mapping[str, str]], peaks: Mapping[str, float]) -> list[str]:
    step_s, gflops = _median(rows, "cpu_step_s"), _median(rows, "cpu_gflops")
    return [
        f"{1e3 * step_s:.0f}",
        f"{1e3 * _median(rows, 'step_s'):.0f}",
        f"{1 / step_s:.2f}",
        f"{float(rows[0]['flops_per_step']) / 1e9:.2f}",
        f"{gflops:.1f}",
        f"{100 * gflops / peaks[rows[0]['precision']]:.0f}",
        f"{100 * gflops / peaks['bf16']:.0f}",
    ]


def _verdict(work: str, speedup: float, share: float) -> str:
    fast = "meets" if speedup >= TARGET_SPEEDUP else "BELOW"
    peak = "meets" if share >= TARGET_PEAK_SHARE else "BELOW"
    return (
        f"{work}: the bf16 step is {speedup:.2f}x as fast as fp32 ({fast} the 2.5x target) and "
        f"runs at {100 * share:.0f}% of the bf16 matmul peak ({peak} the 50% target)."
    )


def _cache_sentence(steps: Sequence[Mapping[str, str]]) -> str:
    """Return the cast cache's paired before/after ratio per workload (empty without recast)."""
    pair = ("bf16 (recast)", "bf16")
    ratio, wall = speedups(steps, pair=pair), speedups(steps, "step_s", pair)
    if not ratio:
        return ""
    parts = [f"{w} {r:.2f}x ({wall[w]:.2f}x wall)" for w, r in sorted(ratio.items())]
    return (
        "The frozen layers' cast cache (`engine.castcache`, bitwise the same step) against bf16 "
        "as plain autocast runs it (`recast`), paired per repeat, median: " + ", ".join(parts) + "."
    )


def _table(steps: Sequence[Mapping[str, str]], peaks: Mapping[str, float]) -> tuple[str, list[str]]:
    body, sentences = [], []
    ratio, wall_ratio = speedups(steps), speedups(steps, "step_s")
    for (work, mode), rows in _by_mode(steps).items():
        paired = f"{ratio[work]:.2f}x ({wall_ratio[work]:.2f}x)" if mode == "bf16" else ""
        body.append([work, mode, str(len(rows)), *_row(rows, peaks), paired])
        if mode == "bf16":
            share = _median(rows, "cpu_gflops") / peaks["bf16"]
            sentences.append(_verdict(work, ratio[work], share))
    sentences.append(_cache_sentence(steps))
    headers = [
        "workload",
        "precision",
        "repeats",
        "CPU ms / step",
        "wall ms / step",
        "steps / CPU s",
        "GFLOP / step",
        "GFLOP/s (CPU time)",
        "% of own-precision peak",
        "% of bf16 peak",
        "bf16 speed-up: CPU (wall)",
    ]
    return md_table(headers, body).strip(), sentences


def _breakdown(rows: Sequence[Mapping[str, str]]) -> str:
    cats = sorted({r["category"] for r in rows})
    body = []
    for (work, mode), cell in _by_mode(rows).items():
        share = {r["category"]: float(r["share"]) for r in cell}
        total = sum(float(r["self_s"]) for r in cell)
        body.append([work, mode, f"{total:.2f}"] + [f"{100 * share.get(c, 0):.0f}" for c in cats])
    return md_table(
        ["workload", "precision", "profiled s (wall, all ops)"] + [f"% {c}" for c in cats], body
    )


def amdahl(parts: Sequence[Mapping[str, str]], peaks: Mapping[str, float]) -> dict[str, float]:
    """Return ``{workload: the bf16 speed-up if only its fp32 matmul/conv time sped up}``.

    From the fp32 breakdown: the matmul/conv share runs ``bf16 peak / fp32 peak`` times faster,
    everything else (element-wise work, norms, casts, the optimizer) as before.
    """
    out = {}
    gain = peaks["bf16"] / peaks["fp32"]
    for (work, prec), cell in _by(parts, "workload", "precision").items():
        if prec == "fp32":
            secs = {r["category"]: float(r["self_s"]) for r in cell}
            mm, total = secs.get("matmul/conv", 0.0), sum(secs.values())
            out[work] = total / (total - mm + mm / gain)
    return out


def _matmul_ratio(parts: Sequence[Mapping[str, str]], work: str) -> float:
    secs = {
        r["precision"]: float(r["self_s"])
        for r in parts
        if r["workload"] == work and r["category"] == "matmul/conv"
    }
    return secs.get("fp32", math.nan) / secs.get("bf16", math.nan)


def free_matmul_caps(
    parts: Sequence[Mapping[str, str]], steps: Sequence[Mapping[str, str]], bf16_peak: float
) -> dict[str, tuple[float, float]]:
    """Return ``{workload: (speed-up cap, share-of-bf16-peak cap)}`` were bf16 matmuls free.

    The bf16 step's CPU time without its matmul/conv share (the breakdown's share, the timed
    median step): everything else (dropout's masks, casts, element-wise work, norms, the
    optimizer) as measured. The caps: the paired fp32/bf16 speed-up divided by ``1 - share``,
    and the step's FLOPs over that remaining time, against the bf16 peak.
    """
    ratio, out = speedups(steps), {}
    for (work, prec), cell in _by(parts, "workload", "precision").items():
        timed = [r for r in steps if r["workload"] == work and _mode(r) == "bf16"]
        if prec != "bf16" or not timed or work not in ratio:
            continue
        mm = sum(float(r["share"]) for r in cell if r["category"] == "matmul/conv")
        rest_s = _median(timed, "cpu_step_s") * (1 - mm)
        rate = float(timed[0]["flops_per_step"]) / rest_s / 1e9
        out[work] = (ratio[work] / (1 - mm), rate / bf16_peak)
    return out


def _breakdown_text(
    parts: Sequence[Mapping[str, str]],
    steps: Sequence[Mapping[str, str]],
    peaks: Mapping[str, float],
) -> str:
    bounds, free = amdahl(parts, peaks), free_matmul_caps(parts, steps, peaks["bf16"])
    lines = [
        f"{work}: were only its fp32 matmul/conv time to run at the bf16/fp32 peak ratio "
        f"({peaks['bf16'] / peaks['fp32']:.1f}x), the step would speed up {bound:.2f}x (Amdahl "
        f"bound from this breakdown); its matmul/conv kernels themselves ran "
        f"{_matmul_ratio(parts, work):.2f}x as fast in bf16 as in fp32; were they free, the "
        f"rest of the bf16 step alone would cap its speed-up at "
        f"{free.get(work, (math.nan,))[0]:.2f}x and its rate at "
        f"{100 * free.get(work, (0, math.nan))[1]:.0f}% of the bf16 peak."
        for work, bound in bounds.items()
    ]
    lines.append(
        "The profiler's seconds are per-operator wall time on a shared machine: read the "
        "shares. A target this step can be held to is its speed-up against the Amdahl bound "
        "above and the matmul/conv kernels' own bf16 speed-up, not the whole step against the "
        "matmul peak: element-wise work, norms and casts do not run on the bf16 matmul units."
    )
    return " ".join(lines)


def _eval_table(rows: Sequence[Mapping[str, str]]) -> str:
    """Return the evaluation pass's table: ms per example, paired ratios against fp32."""
    col = "cpu_ms_per_example"
    steps = [{**r, "cpu_step_s": r[col], "step_s": r["ms_per_example"]} for r in rows]
    ratios = {m: speedups(steps, pair=("fp32", m)) for m in ("bf16", "bf16 (recast)")}
    body = [
        [
            work,
            mode,
            rows_[0]["examples"],
            f"{_median(rows_, col):.2f}",
            f"{_median(rows_, 'ms_per_example'):.2f}",
            f"{ratios[mode][work]:.2f}x" if mode in ratios and work in ratios[mode] else "",
        ]
        for (work, mode), rows_ in _by_mode(rows).items()
    ]
    heads = "workload|precision|examples|CPU ms / example|wall ms / example|speed-up over fp32"
    return md_table(heads.split("|"), body).strip()


def _plot(steps: Sequence[Mapping[str, str]], peaks: Mapping[str, float], img: Path) -> str:
    fig, ax = new_figure(
        "Training step GFLOP/s vs the matmul peak (one thread)",
        "workload",
        "GFLOP/s of CPU time (median, log)",
    )
    cells = _by(steps, "workload", "precision")
    works = sorted({w for w, _ in cells})
    for i, prec in enumerate(PRECISIONS):
        ys = [_median(cells[(w, prec)], "cpu_gflops") if (w, prec) in cells else 0.0 for w in works]
        ax.bar([x + (i - 0.5) * 0.4 for x in range(len(works))], ys, width=0.4, label=prec)
    for prec, style in zip(PRECISIONS, ("--", ":"), strict=True):
        ax.axhline(peaks[prec], linestyle=style, color="k", label=f"{prec} matmul peak")
    ax.set_xticks(range(len(works)), works)
    ax.set_yscale("log")
    return save_with_legend(
        fig, ax, img, "throughput-gflops", "training step GFLOP/s vs matmul peak"
    )


def render(src: Path, img: Path) -> str:
    """Return the throughput section (writes ``throughput-gflops.png`` into ``img``)."""
    meta = read_meta(src)
    steps, matmul = read_csv(src / "steps.csv"), read_csv(src / "matmul.csv")
    peaks = {p: _median(rows, "cpu_gflops") for (p,), rows in _by(matmul, "precision").items()}
    plan = meta.get("plan", {})
    table, sentences = _table(steps, peaks)
    size = plan.get("matmul_size", "?")
    blocks = [
        *section_head("## Training throughput: fp32 and bf16 against the matmul peak", meta),
        f"One client's training step (forward in the precision, backward, AdamW), "
        f"{plan.get('steps', '?')} timed steps after {plan.get('warmup', '?')} warm-up steps, "
        f"{plan.get('repeats', '?')} repeats, {plan.get('threads', '?')} thread(s); both "
        "precisions and the matmuls timed back to back in each repeat. Rates are per second "
        "of this process's CPU time (one thread: our work only; the wall time on this shared "
        "machine also counts other processes' work, shown for reference). FLOPs: matmul and "
        "convolution work counted from operand shapes by torch's FlopCounterMode (forward and "
        "the backward autograd actually runs; see `ilora.bench.throughput`). Matmul peak: "
        f"{size}x{size} products, median {peaks['fp32']:.1f} GFLOP/s fp32 and "
        f"{peaks['bf16']:.1f} GFLOP/s bf16 (CPU capability {meta.get('cpu_capability', '?')}, "
        f"native bf16: {meta.get('native_bf16', '?')}).",
        table,
        " ".join(s for s in sentences if s),
        _plot([r for r in steps if _variant(r) == DEFAULT], peaks, img),
    ]
    if (src / "eval.csv").is_file():
        blocks += [
            "The evaluation pass (`engine.evaluation.evaluate`: eval and inference mode, the "
            "model's precision, no backward) over the first full batches of the same client, "
            "timed after each step row (`ilora.bench.evalspeed`):",
            _eval_table(read_csv(src / "eval.csv")),
        ]
    if (src / "breakdown.csv").is_file():
        parts = read_csv(src / "breakdown.csv")
        blocks += [
            "Where a step's CPU time goes (self time per operator, torch.profiler, "
            f"{plan.get('profile_steps', '?')} steps):",
            _breakdown(parts).strip(),
            _breakdown_text([r for r in parts if _variant(r) == DEFAULT], steps, peaks),
        ]
    return "\n\n".join(b for b in blocks if b) + "\n"
