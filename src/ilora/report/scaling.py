"""Render ``results/scaling/`` (``ilora bench scaling``) as a RESULTS.md section.

Reads ``runs.csv`` and ``meta.json`` only. One table: each method's final validation accuracy
under each mixed-rank scaling convention, and each convention's paired difference against the
presets' convention (pairs: the same method and seed), with its 95% interval and verdict from
``ilora.report.stats``. The rule that chooses: another convention replaces the presets' one
only if its difference is ``ahead``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head
from ilora.report.stats import AHEAD
from ilora.report.stats import Interval
from ilora.report.stats import mean_ci
from ilora.report.stats import paired

Cells = dict[str, dict[tuple[str, int], float]]


def cells(rows: Sequence[Mapping[str, str]]) -> Cells:
    """Return ``{convention: {(method, seed): 100 * validation accuracy}}``."""
    out: Cells = defaultdict(dict)
    for r in rows:
        out[r["convention"]][(r["algorithm"], int(r["seed"]))] = 100 * float(
            r["validation_accuracy"]
        )
    return out


def _paired(
    cell: Mapping[tuple[str, int], float], base: Mapping[tuple[str, int], float]
) -> Interval:
    keys = sorted(set(cell) & set(base))
    return paired(
        {i: cell[k] for i, k in enumerate(keys)}, {i: base[k] for i, k in enumerate(keys)}
    )


def _table(data: Cells, order: Sequence[str], default: str) -> str:
    pairs = sorted({k for c in data.values() for k in c})
    headers = ["method", "seed", *order]
    body = [[m, str(s), *(f"{data[c][(m, s)]:.1f}" if (m, s) in data[c] else "" for c in order)]
            for m, s in pairs]  # fmt: skip
    body.append(["mean (95% CI)", "", *(mean_ci(data[c].values()).text(1) for c in order)])
    diffs = [_paired(data[c], data[default]).text(2, signed=True) if c != default else ""
             for c in order]  # fmt: skip
    body.append([f"paired difference vs {default}", "", *diffs])
    verdicts = [_paired(data[c], data[default]).verdict() if c != default else "" for c in order]
    body.append(["verdict", "", *verdicts])
    return md_table(headers, body).strip()


def render(src: Path, img: Path) -> str:
    """Return the scaling-convention section (no plot: one number per method and convention)."""
    meta = read_meta(src)
    data = cells(read_csv(src / "runs.csv"))
    default = str(meta["default"])
    order = [c for c in meta["scales"] if c in data]
    ahead = [
        c for c in order if c != default and _paired(data[c], data[default]).verdict() == AHEAD
    ]
    scales = md_table(
        ["convention", *(f"s(r={r})" for r in meta["ranks"]), "overrides"],
        [[c, *(meta["scales"][c][str(r)] for r in meta["ranks"]),
          " ".join(f"`{o}`" for o in meta["overrides"][c]) or "(the presets)"] for c in order],
    ).strip()  # fmt: skip
    if ahead:
        choice = f"{', '.join(ahead)} is ahead of `{default}` on validation: it should replace it."
    else:
        choice = (
            f"No convention is ahead of `{default}` on validation, so the presets and the "
            f"comparison keep `{default}` for every method alike."
        )
    blocks = [
        *section_head("## Scaling convention at mixed ranks", meta),
        f"The demo (`{meta['config']}`) at client ranks {meta['ranks']}, evaluated on its "
        "validation split (never test), under each LoRA scaling convention. Scales per rank:",
        scales,
        "Final validation accuracy (%), and each convention's difference against the presets' "
        "one, paired by method and seed (95% Student-t interval, `ilora.report.stats`):",
        _table(data, order, default),
        choice,
    ]
    return "\n\n".join(b for b in blocks if b) + "\n"
