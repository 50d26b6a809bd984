"""Render ``results/engine/`` (``ilora bench engine``) as a RESULTS.md section.

Reads ``overhead.csv`` (engine vs bare seconds per round and repeat), ``memory.csv`` (peak
resident memory per client count) and ``meta.json`` only. Targets of issue 6: the embedded
engine's overhead over the bare local-training compute <= 5% (median over repeats of
``Σ engine / Σ bare − 1``), and 1000 simulated MiniLM clients within 4 GB peak RSS, memory growing
by about one adapter per client, not one model.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from ilora.report import engine_scale
from ilora.report._plot import new_figure
from ilora.report._plot import save_with_legend
from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head

MB, GB = 2**20, 10**9
TARGET_OVERHEAD, TARGET_CLIENTS, TARGET_BYTES = 0.05, 1000, 4 * GB
Row = Mapping[str, str]


def _overheads(
    rows: Sequence[Mapping[str, str]], kind: str
) -> dict[str, list[tuple[float, float]]]:
    """Return ``{algorithm: [(Σ engine, Σ bare) per repeat]}``: wall (``""``) or ``"cpu_"`` s."""
    sums: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        cell = sums[(r["algorithm"], int(r["repeat"]))]
        cell[0] += float(r[f"engine_{kind}s"])
        cell[1] += float(r[f"bare_{kind}s"])
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (alg, _), (engine, bare) in sorted(sums.items()):
        out[alg].append((engine, bare))
    return dict(out)


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}"


OVERHEAD_HEADERS = [
    "algorithm",
    "repeats",
    "clients x steps / round",
    "engine CPU s / round",
    "bare CPU s / round",
    "overhead % CPU (median)",
    "CPU min .. max",
    "overhead % wall (median)",
    "wall min .. max",
]


def _overhead_row(
    alg: str, reps: list[tuple[float, float]], wall: list[tuple[float, float]], first: Row
) -> tuple[list[object], str, tuple[float, float]]:
    """Return one algorithm's table row, sentence and (engine, bare) CPU seconds per round."""
    ratios = [e / b - 1 for e, b in reps]
    walls = [e / b - 1 for e, b in wall]
    med, rounds = statistics.median(ratios), int(first["rounds"])
    eng = statistics.median(e for e, _ in reps) / rounds
    bare = statistics.median(b for _, b in reps) / rounds
    row: list[object] = [
        alg,
        len(reps),
        f"{first['sampled']} x {first['steps']}",
        f"{eng:.2f}",
        f"{bare:.2f}",
        _pct(med),
        f"{_pct(min(ratios))} .. {_pct(max(ratios))}",
        _pct(statistics.median(walls)),
        f"{_pct(min(walls))} .. {_pct(max(walls))}",
    ]
    verdict = "within" if med <= TARGET_OVERHEAD else "ABOVE"
    sentence = (
        f"{alg}: an engine round costs {_pct(med)}% CPU time over its bare local steps "
        f"(median of {len(reps)} repeats; {verdict} the {100 * TARGET_OVERHEAD:g}% target), "
        f"{_pct(statistics.median(walls))}% in wall time."
    )
    return row, sentence, (eng, bare)


def _overhead_section(src: Path, img: Path) -> list[str]:
    rows = read_csv(src / "overhead.csv")
    rounds = str(len({r["round"] for r in rows}))
    first = {r["algorithm"]: {**r, "rounds": rounds} for r in reversed(rows)}
    cpu, wall = _overheads(rows, "cpu_"), _overheads(rows, "")
    made = [_overhead_row(alg, reps, wall[alg], first[alg]) for alg, reps in cpu.items()]
    body = [row for row, _, _ in made]
    note = (
        "The target is read on CPU time: on this shared machine the wall time also counts "
        "other processes' work in the gaps of ours, which is why its spread is wider."
    )
    return [
        "### Engine overhead over bare local training",
        md_table(OVERHEAD_HEADERS, body).strip(),
        " ".join(sentence for _, sentence, _ in made) + " " + note,
        _bars(list(cpu), [b[0] for *_, b in made], [b[1] for *_, b in made], img),
    ]


def _bars(labels: list[str], engine: list[float], bare: list[float], img: Path) -> str:
    fig, ax = new_figure(
        "CPU seconds per round: embedded engine vs bare local steps",
        "algorithm",
        "CPU seconds per round (median over repeats)",
    )
    xs = list(range(len(labels)))
    ax.bar([x - 0.2 for x in xs], engine, width=0.4, label="embedded engine round")
    ax.bar([x + 0.2 for x in xs], bare, width=0.4, label="bare local steps (same batches)")
    ax.set_xticks(xs, labels)
    return save_with_legend(fig, ax, img, "engine-overhead", "engine vs bare seconds per round")


MEMORY_HEADERS = [
    "clients",
    "sampled / round",
    "rounds",
    "peak RSS MB (process)",
    "RSS after set-up MB",
    "peak RSS MB (rounds)",
    "KiB per added client",
    "adapters per added client",
    "models per added client",
]


def _memory_row(r: Row, base: Row) -> list[object]:
    """Return one client count's row; growth is per client added over the ``base`` run."""
    n, n0 = int(r["clients"]), int(base["clients"])
    rounds_peak, r0 = float(r["peak_rss_rounds_bytes"]), float(base["peak_rss_rounds_bytes"])
    inc = (rounds_peak - r0) / (n - n0) if n > n0 else None
    per = [] if inc is None else [inc / 1024, inc / float(base["adapter_bytes"])]
    per += [] if inc is None else [inc / float(base["model_bytes"])]
    return [
        n,
        r["sampled_per_round"],
        r["rounds"],
        f"{float(r['peak_rss_bytes']) / MB:.0f}",
        f"{float(r['rss_after_build_bytes']) / MB:.0f}",
        f"{rounds_peak / MB:.0f}",
        *([f"{per[0]:+.1f}", f"{per[1]:+.3f}", f"{per[2]:+.5f}"] if per else ["", "", ""]),
    ]


def _growth(base: Row, last: Row) -> str:
    """Return how the rounds' peak grows per added client, in adapters and models."""
    n0, n1 = int(base["clients"]), int(last["clients"])
    adapter, model = float(base["adapter_bytes"]), float(base["model_bytes"])
    change = float(last["peak_rss_rounds_bytes"]) - float(base["peak_rss_rounds_bytes"])
    inc = change / (n1 - n0)
    if inc <= adapter:
        grows = "at most one adapter per client" + (
            " (a fall is the allocator's noise)" if inc < 0 else ""
        )
    else:
        grows = "MORE than one adapter per client"
    return (
        f"From {n0} to {n1} clients the rounds' peak changes by {change / MB:+.1f} MB, "
        f"{inc / 1024:+.1f} KiB per added client = {inc / adapter:+.3f} adapters = "
        f"{inc / model:+.5f} models: {grows}."
    )


def _memory_target(last: Row) -> str:
    """Return whether the target client count stays within the peak-memory target."""
    n1, peak1 = int(last["clients"]), float(last["peak_rss_bytes"])
    if n1 < TARGET_CLIENTS:
        return f"The {TARGET_CLIENTS}-client target setting was not measured in this run."
    ok = "within" if peak1 <= TARGET_BYTES else "ABOVE"
    return (
        f"{n1} clients peak at {peak1 / GB:.2f} GB (10^9 bytes) over the whole process "
        f"(data loading included), {ok} the {TARGET_BYTES / GB:g} GB target."
    )


def _memory_section(src: Path, img: Path) -> list[str]:
    rows = sorted(read_csv(src / "memory.csv"), key=lambda r: int(r["clients"]))
    base, last = rows[0], rows[-1]
    adapter, model = float(base["adapter_bytes"]), float(base["model_bytes"])
    text = [
        f"Model: {model / MB:.1f} MB; one adapter (LoRA factors at a client's rank, mean over "
        f"clients, plus the head): {adapter / 1024:.1f} KiB. Per added client = growth of the "
        f"rounds' peak over the {base['clients']}-client run, divided by the added clients."
    ]
    if int(last["clients"]) > int(base["clients"]):
        text.append(_growth(base, last))
    text.append(_memory_target(last))
    return [
        "### Peak memory vs number of simulated clients",
        md_table(MEMORY_HEADERS, [_memory_row(r, base) for r in rows]).strip(),
        " ".join(text),
        _memory_plot(rows, adapter, model, img),
    ]


def _memory_plot(rows: Sequence[Mapping[str, str]], adapter: float, model: float, img: Path) -> str:
    ns = [float(r["clients"]) for r in rows]
    peaks = [float(r["peak_rss_rounds_bytes"]) / MB for r in rows]
    n0, p0 = ns[0], peaks[0]
    series = {
        "measured peak RSS during the rounds": (ns, peaks),
        "+1 adapter per client (projection)": (ns, [p0 + (n - n0) * adapter / MB for n in ns]),
        "+1 model per client (projection)": (ns, [p0 + (n - n0) * model / MB for n in ns]),
    }
    fig, ax = new_figure("Peak RSS vs simulated clients (one process)", "clients", "MB (log)")
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label, linewidth=2.5 if "measured" in label else 1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return save_with_legend(fig, ax, img, "engine-memory", "peak RSS vs clients")


def render(src: Path, img: Path) -> str:
    """Return the engine section (writes ``engine-*.png`` into ``img``)."""
    meta = read_meta(src)
    plan = meta.get("plan", {})
    blocks = [
        *section_head("## Embedded engine: overhead and memory", meta),
        f"Overhead: `{plan.get('config', '?')}` for each algorithm, {plan.get('rounds', '?')} "
        f"timed rounds per run (the evaluating last round is not timed; overrides "
        f"`{' '.join(plan.get('overrides', []))}`), "
        f"{plan.get('repeats', '?')} runs, {plan.get('threads', '?')} thread(s); the bare loop "
        "runs the same clients, batches and AdamW steps (forward, backward, step) with the "
        "adapters installed untimed, each bare round right after its engine round. Memory: "
        f"`{plan.get('memory_config', '?')}` with "
        f"`{' '.join(plan.get('memory_overrides', []))}`, algorithm "
        f"{plan.get('memory_algorithm', '?')}, IID shares, {plan.get('sampled', '?')} clients "
        f"sampled per round, {plan.get('memory_rounds', '?')} round(s) of "
        f"{plan.get('memory_steps', '?')} step(s), each client count in a fresh process; "
        "MB = 2^20 bytes.",
    ]
    if (src / "overhead.csv").is_file():
        blocks += _overhead_section(src, img)
    if (src / "memory.csv").is_file():
        blocks += _memory_section(src, img)
    if (src / "scale" / "scale.csv").is_file():
        blocks += engine_scale.render(src / "scale", img)
    return "\n\n".join(b for b in blocks if b) + "\n"
