"""Render ``results/exactness/`` (``ilora bench exactness``) as a RESULTS.md section.

Reads ``runs.csv`` and ``meta.json`` only. For ILoRA and ILoRA-S at mixed and at equal ranks:
final accuracy before and after the exactness fix (mean with its 95% interval over seeds), the
paired difference after − before with its interval and verdict (``ilora.report.stats``), and
the mean ``agg_error`` and ``download_error`` of each version.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from ilora.report._table import command_block, md_table, meta_line, num, read_csv, read_meta
from ilora.report.stats import mean_ci, paired

Key = tuple[str, str]  # (algorithm, ranks)


def by_cell(rows: Sequence[Mapping[str, str]], col: str) -> dict[Key, dict[str, dict[int, float]]]:
    """Return ``{(method, ranks): {version: {seed: value}}}`` of column ``col``."""
    out: dict[Key, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        out[(r["algorithm"], r["ranks"])][r["version"]][int(r["seed"])] = num(r[col])
    return out


def _mean(values: Mapping[int, float]) -> str:
    finite = [v for v in values.values() if not math.isnan(v)]
    return f"{sum(finite) / len(finite):.4f}" if finite else "n/a"


def _body(rows: Sequence[Mapping[str, str]]) -> list[list[str]]:
    acc, agg, down = (by_cell(rows, c) for c in ("final_accuracy", "mean_agg_error",
                                                 "mean_download_error"))  # fmt: skip
    body = []
    for key in sorted(acc):
        before = {s: 100 * v for s, v in acc[key]["before"].items()}
        after = {s: 100 * v for s, v in acc[key]["after"].items()}
        diff = paired(after, before)
        body.append([
            key[0], key[1], mean_ci(before.values()).text(2), mean_ci(after.values()).text(2),
            diff.text(2, signed=True), diff.verdict(),
            f"{_mean(agg[key]['before'])} → {_mean(agg[key]['after'])}",
            f"{_mean(down[key]['before'])} → {_mean(down[key]['after'])}",
        ])  # fmt: skip
    return body


GridKey = tuple[str, str, str, str]  # (algorithm, task, ranks, alpha)


def grid_body(rows: Sequence[Mapping[str, str]]) -> list[list[str]]:
    """Return one row per grid setting: before, after and the paired difference (points)."""
    cells: dict[GridKey, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        key = (r["algorithm"], r["task"], r["ranks"], r["alpha"])
        cells[key][r["version"]][int(r["seed"])] = 100 * num(r["final_accuracy"])
    body = []
    for key in sorted(cells):
        before, after = cells[key]["before"], cells[key]["after"]
        diff = paired(after, before)
        body.append([*key, mean_ci(before.values()).text(1), mean_ci(after.values()).text(1),
                     diff.text(2, signed=True), diff.verdict()])  # fmt: skip
    return body


def _grid(src: Path, meta: Mapping[str, object]) -> list[str]:
    if not (src / "grid.csv").is_file():
        return []
    headers = ["method", "task", "ranks", "Dirichlet α", "before % (95% CI)", "after % (95% CI)",
               "after − before points (95% CI)", "verdict"]  # fmt: skip
    return [
        f"The quality grid re-run for ILoRA and ILoRA-S, against the committed grid "
        f"(`{meta['grid_before']}`, made before the fix), paired by seed. Centralized training "
        "is re-run too as the control: the fix does not touch it, so its difference must be 0.",
        md_table(headers, grid_body(read_csv(src / "grid.csv"))).strip(),
    ]


def render(src: Path, img: Path) -> str:
    """Return the before/after section (no plot: a handful of numbers per row)."""
    meta = read_meta(src)
    rows = read_csv(src / "runs.csv")
    before = ", ".join(f"`{k}: {v}`" for k, v in meta["before"].items())
    equal = " ".join(f"`{s}`" for s in meta["ranks"]["equal"])
    headers = ["method", "ranks", "before % (95% CI)", "after % (95% CI)",
               "after − before points (95% CI)", "verdict", "mean agg_error before → after",
               "mean download_error before → after"]  # fmt: skip
    blocks = [
        "## ILoRA and ILoRA-S before and after the exactness fix",
        command_block(*meta.get("made_by", []), str(meta.get("command", ""))).strip(),
        meta_line(meta),
        f"The demo (`{meta['config']}`) at its mixed ranks and at equal ranks ({equal}). "
        f"Before = the old defaults, still available as options ({before}); after = the "
        "defaults (one shared QR-init offset, the paper's QR redistribution in factor space). "
        "Final accuracy on the demo's test subset; the difference is paired by seed (same "
        "partition, initialisation and sampling). `agg_error`: the applied global change "
        "against the weighted mean of the clients' changes; `download_error`: how far the "
        "clients' starts are from the global model (both per round, averaged over rounds).",
        md_table(headers, _body(rows)).strip(),
        *_grid(src, meta),
    ]
    return "\n\n".join(b for b in blocks if b) + "\n"
