"""The fault campaign's accounting and update-norm sentences (``report.faults`` renders them).

Reads the rows of ``accounting.csv`` (per run and fault kind: drawn, failed, rejected,
accepted; kind ``honest`` for the clients without a fault) and ``norms.csv`` (the norm of every
update a client produced, before faults and clipping).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from collections.abc import Sequence

from ilora.report._table import md_table
from ilora.report._table import seeds_words

BYZANTINE = ("sign_flip", "scale")
COUNTS = ("injected", "failed", "rejected", "accepted")
FAULTED = ("faulty", "screened")  # the runs under the fault mix
Row = Mapping[str, str]
Runs = dict[str, dict[str, dict[int, Row]]]  # algorithm -> variant -> seed -> faults.csv row


def seed_of(row: Row) -> int:
    """Return a row's seed (0 in files from before the campaign had seeds)."""
    return int(row.get("seed") or 0)


def accounting(rows: Sequence[Row]) -> tuple[str, list[str]]:
    """Return the accounting table of the runs under faults (summed over seeds), and sentences.

    Rows of kind ``honest`` (files from before it have none) count the clients without a fault.
    """
    totals: dict[tuple[str, str, str], list[int]] = {}
    seeds: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        if r["variant"] in FAULTED:
            row = totals.setdefault((r["algorithm"], r["variant"], r["fault"]), [0] * len(COUNTS))
            for i, k in enumerate(COUNTS):
                row[i] += int(r[k])
            seeds.setdefault((r["algorithm"], r["variant"]), set()).add(seed_of(r))
    headers = ["algorithm", "run", "fault", "seeds", "drawn", "failed (lost)", "rejected"]
    headers.append("accepted")
    body = [
        [alg, variant, kind, len(seeds[(alg, variant)]), *t]
        for (alg, variant, kind), t in sorted(totals.items())
    ]
    sentences = [_accounted(key, totals, len(seeds[key])) for key in sorted(seeds)]
    return md_table(headers, body).strip(), sentences


Totals = Mapping[tuple[str, str, str], list[int]]  # (algorithm, variant, fault) -> COUNTS


def _accounted(key: tuple[str, str], totals: Totals, n: int) -> str:
    """Return the sentence on what one algorithm's runs of one variant did with every fault."""
    mine = {kind: t for (a, v, kind), t in totals.items() if (a, v) == key}
    bad = [t for kind, t in mine.items() if kind not in (*BYZANTINE, "honest")]
    injected, counted = sum(t[0] for t in bad), sum(t[1] + t[2] for t in bad)
    slipped = sum(t[3] for t in bad)
    verdict = "every one" if counted == injected and slipped == 0 else f"{slipped} NOT"
    byz = [
        f"{t[2]} of {t[0]} {kind.replace('_', '-')} updates rejected, {t[3]} accepted"
        for kind, t in sorted(mine.items())
        if kind in BYZANTINE
    ]
    out = (
        f"{key[0]}, {key[1]} (summed over {seeds_words(n)}): {injected} lost or corrupt updates "
        f"were injected and {counted} are counted in history.jsonl as failed or rejected "
        f"({verdict} accounted for). Byzantine: {'; '.join(byz) or 'none injected'}."
    )
    if "honest" in mine:
        honest = mine["honest"]
        out += f" Of {honest[0]} honest updates, the server rejected {honest[2]}."
    return out


def norms_sentences(norms: Sequence[Row], runs: Runs) -> list[str]:
    """Return, per algorithm, how the clip threshold sits among the honest norms of all seeds."""
    out = []
    for alg, variants in runs.items():
        faulty = variants.get("faulty", {})
        clip = max((float(r["clip_update_norm"]) for r in faulty.values()), default=0.0)
        mine = [n for n in norms if n["algorithm"] == alg and n["variant"] == "faulty"]
        if clip <= 0 or not mine:
            continue
        values = sorted(float(n["norm"]) for n in mine)
        above = sum(v > clip for v in values)
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        effect = (
            "also shortens those honest updates" if above else "leaves every honest update alone"
        )
        bound = max(float(r["max_update_norm"]) for r in faulty.values())
        scaled = (
            f"a scaled (x10) one, at {10 * values[0]:.3g} or more, exceeds the bound "
            f"fed.max_update_norm {bound:g} and is rejected"
            if 0 < bound < 10 * values[0]
            else f"it bounds a scaled (x10) one to {clip:g}"
        )
        out.append(
            f"{alg}: the {len(values)} updates its clients produced over "
            f"{seeds_words(len({seed_of(n) for n in mine}))} (before any fault or clipping) have "
            f"norms ‖u − sent‖ from {values[0]:.3g} to {values[-1]:.3g} (median "
            f"{statistics.median(values):.3g}, 95th percentile {p95:.3g}); {above} exceed the "
            f"clip threshold {clip:g}, so clipping {effect}; {scaled}."
        )
    return out
