"""Render ``results/faults_control/`` as the fault campaign's target section (issue 17).

``ilora bench faults --controls ... --no-clean`` runs, per algorithm and seed, the faulty run
(the fault mix, the server's checks, clipping and, for a mean, robust aggregation) and the
control that loses the updates of exactly the clients the mix hits, under the same guards.
The two differ only in the corrupt and Byzantine updates that arrive, and the corrupt ones are
all rejected, so ``faulty − control`` (paired by seed) is what the Byzantine updates the
defences accepted cost. Target: at most ``target_points`` (``meta.json``) for every method
whose aggregation is a mean, read by :func:`stats.mean_at_least`. Reads ``faults.csv``,
``accounting.csv`` and ``meta.json`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from ilora.report import stats
from ilora.report._faults_counts import BYZANTINE
from ilora.report._faults_counts import Row
from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head
from ilora.report.faults import _finals
from ilora.report.faults import _gap
from ilora.report.faults import _group
from ilora.report.faults import _guard
from ilora.report.faults import _paired
from ilora.report.faults import _per_seed
from ilora.report.faults import target_points


def _accepted_byzantine(rows: Sequence[Row], alg: str) -> tuple[int, int]:
    """Return ``(accepted, injected)`` Byzantine updates of ``alg``'s faulty runs, all seeds."""
    mine = [r for r in rows if r["algorithm"] == alg and r["variant"] == "faulty"]
    byz = [r for r in mine if r["fault"] in BYZANTINE]
    return sum(int(r["accepted"]) for r in byz), sum(int(r["injected"]) for r in byz)


def _verdict(gaps: Mapping[int, float], target: float | None) -> str:
    """Return ``met`` when the mean of faulty − control is at least −target (``stats``)."""
    if target is None:
        return "not recorded"
    return "met" if stats.mean_at_least(stats.mean_ci(gaps.values()), -target) else "not met"


def _row(
    alg: str,
    variants: Mapping[str, Mapping[int, Row]],
    counts: tuple[int, int],
    target: float | None,
) -> list[str]:
    faulty, lost = _finals(variants["faulty"]), _finals(variants["lost"])
    gaps = _paired(faulty, lost)
    mean = stats.mean_std(gaps.values())[0]
    mean_agg = next(iter(variants["faulty"].values())).get("mean_aggregation", "")
    verdict = _verdict(gaps, target)
    return [
        alg,
        {"True": "mean", "False": "not a mean"}.get(mean_agg, "?"),
        _guard(next(iter(variants["faulty"].values()))),
        f"{counts[0]} of {counts[1]}",
        f"{stats.mean_std(faulty.values())[0]:.2f}",
        f"{stats.mean_std(lost.values())[0]:.2f}",
        f"{_gap(gaps) if len(gaps) > 1 else f'{mean:+.2f}'} ({_per_seed(gaps)})",
        verdict,
    ]


TITLE = "## Fault campaign target: accepted Byzantine updates against the lost-updates control"


def render(src: Path, img: Path, title: str = TITLE) -> str:
    """Return the target section (see the module docstring) under ``title``; ``img`` unused."""
    meta = read_meta(src)
    runs = _group(read_csv(src / "faults.csv"))
    acc = read_csv(src / "accounting.csv")
    headers = ["algorithm", "aggregation", "server guards", "Byzantine updates accepted"]
    headers += ["faulty final %", "control final %", "faulty − control, points (by seed)"]
    target = target_points(meta)
    headers.append("target (not recorded)" if target is None else f"target (≥ −{target:g})")
    body = [
        _row(alg, variants, _accepted_byzantine(acc, alg), target)
        for alg, variants in runs.items()
        if "faulty" in variants and "lost" in variants
    ]
    seeds = sorted({s for v in runs.values() for by in v.values() for s in by})
    parts = [
        *section_head(title, meta),
        (
            f"Setting: `{meta.get('config', '?')}`, {meta.get('rounds', '?')} rounds, seeds "
            f"{', '.join(map(str, seeds))}; the fault mix of the section above. The control "
            "loses the updates of exactly the clients the mix hits and runs under the same "
            "server guards, so the two runs differ only in the corrupt updates (all rejected) "
            "and the Byzantine ones the guards accepted: faulty − control is their cost. The "
            f"target: at most {'(not recorded)' if target is None else f'{target:g}'} point for "
            "every method whose aggregation is a mean (final accuracy on the whole test split, "
            "paired by seed)."
        ),
        md_table(headers, body).strip(),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
