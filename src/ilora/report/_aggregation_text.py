"""The sentences of the aggregation section (:mod:`ilora.report.aggregation`) around its tables.

Each reads the per-configuration cells (median seconds, peak memory, ranks) or ``meta.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report._table import read_csv

FACTOR = "ilora"  # ILoRA's factor-space aggregation, the method the section is about
Key = tuple[str, int, int]  # (method, d, clients)


def secs(x: float) -> str:
    return f"{x:.4f}" if x < 10 else f"{x:.1f}"


def extremes(cells: Mapping[Key, Mapping[str, Any]], d: int, k: int) -> str:
    """Return a sentence on the fastest and slowest methods at one configuration."""
    here = {m: c["median"] for (m, dd, kk), c in cells.items() if dd == d and kk == k}
    if not here:
        return ""
    ordered = sorted(here, key=here.__getitem__)
    fast, slow = ordered[0], ordered[-1]
    over_1s = [m for m in ordered if here[m] >= 1.0]
    return (
        f"At d = {d} with {k} clients the fastest server step is {fast} "
        f"({secs(here[fast])} s) and the slowest {slow} ({secs(here[slow])} s); "
        f"{len(over_1s)} of {len(ordered)} methods take 1 s or more"
        + (f" ({', '.join(over_1s)})." if over_1s else ".")
    )


def ranks_text(
    meta: Mapping[str, Any], cells: Mapping[Key, Mapping[str, Any]] | None = None
) -> str:
    """Return the clients' ranks from ``meta.json`` ("not recorded" when absent).

    With ``cells``, methods that ran with one rank for every client (``ranks`` holds one value)
    are named with the rank they got (``uniform_rank``).
    """
    ranks = meta.get("ranks")
    text = ", ".join(str(r) for r in ranks) if ranks else "not recorded"
    single = sorted({m for (m, _, _), c in (cells or {}).items() if "," not in str(c["ranks"])})
    if single:
        uniform = meta.get("uniform_rank", "not recorded")
        text += f" ({', '.join(single)}: rank {uniform} for every client)"
    return text


def load_note(meta: Mapping[str, Any]) -> str:
    load = meta.get("load_avg_1min_at_end")
    if load is None:
        return ""
    return (
        f" The machine's 1-minute load average was {load} at the end: above its "
        f"{meta.get('cpus', '?')} CPUs, absolute times include waiting for a CPU; the "
        "interleaved ILoRA forms share that noise, so their ratios are the robust figures."
    )


def checks(src: Path) -> list[str]:
    path = src / "checks.csv"
    if not path.is_file():
        return []
    errs = [float(r["rel_error"]) for r in read_csv(path)]
    worst = max(errs)
    return [
        f"Correctness: ILoRA's factor-space result equals the truncated dense SVD of ΔW to a "
        f"relative Frobenius error of at most {worst:.1e} over the {len(errs)} configurations "
        f"({'within' if worst <= 1e-6 else 'OUTSIDE'} the 1e-6 tolerance)."
    ]


def growth(cells: Mapping[Key, Mapping[str, Any]], d: int, clients: Sequence[int]) -> str:
    """Return a sentence on how ILoRA's and the slowest method's time grow with clients."""
    if len(clients) < 2:
        return ""
    lo, hi = clients[0], clients[-1]
    grow = {
        m: cells[(m, d, hi)]["median"] / cells[(m, d, lo)]["median"]
        for m, dd, k in cells
        if dd == d and k == lo and (m, d, hi) in cells and cells[(m, d, lo)]["median"] > 0
    }
    if not grow:
        return ""
    most = max(grow, key=grow.__getitem__)
    ilora = f"ILoRA's median time grows {grow[FACTOR]:.1f}x; " if FACTOR in grow else ""
    return (
        f"From {lo} to {hi} clients ({hi / lo:.1f}x the clients), {ilora}"
        f"the largest growth is {most}'s ({grow[most]:.1f}x)."
    )
