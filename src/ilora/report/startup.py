"""Render ``results/startup/`` (``ilora bench startup``) as a RESULTS.md section.

Reads ``startup.csv`` (seconds per tree, command and repeat; whether torch and transformers
were imported) and ``meta.json``. Target of issue 15: ``ilora --help``, ``ilora list ...`` and
``ilora validate`` answer in under 0.5 s (median) and import neither torch nor transformers.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ilora.report._table import md_table
from ilora.report._table import read_csv
from ilora.report._table import read_meta
from ilora.report._table import section_head

TARGET_S = 0.5


def _cell(rows: list[dict[str, str]]) -> tuple[float, str]:
    """Return the median seconds and what the runs imported (``torch``, ``transformers``)."""
    median = statistics.median(float(r["seconds"]) for r in rows)
    heavy = [m for m in ("torch", "transformers") if any(r[m] == "True" for r in rows)]
    return median, ", ".join(heavy) or "neither"


def _row(command: str, rows: list[dict[str, str]], trees: list[str]) -> tuple[list[object], str]:
    """Return ``command``'s table row, and a note when it misses the target ("" otherwise)."""
    line: list[object] = [f"`ilora {command}`"]
    cells = {}
    for tree in trees:
        mine = [r for r in rows if (r["tree"], r["command"]) == (tree, command)]
        if mine:
            cells[tree] = _cell(mine)
        line += [f"{cells[tree][0]:.2f}", cells[tree][1]] if mine else ["", ""]
    if "before" in trees:
        ok = "before" in cells and "after" in cells
        line.append(f"{cells['before'][0] / cells['after'][0]:.1f}x" if ok else "")
    median, heavy = cells.get("after", (float("inf"), "not measured"))
    slow = median > TARGET_S or heavy != "neither"
    return line, f"`ilora {command}` ({median:.2f} s, imports {heavy})" if slow else ""


def render(src: Path, img: Path) -> str:
    """Return the start-up section (no figures)."""
    del img
    rows = read_csv(src / "startup.csv")
    meta = read_meta(src)
    commands = list(dict.fromkeys(r["command"] for r in rows))
    trees = [t for t in ("before", "after") if any(r["tree"] == t for r in rows)]
    made = [_row(command, rows, trees) for command in commands]
    slow = [note for _, note in made if note]
    headers = ["command"]
    for tree in trees:
        headers += [f"{tree}: median s", f"{tree}: imports"]
    headers += ["speed-up"] if "before" in trees else []
    repeats = len({r["repeat"] for r in rows})
    before = meta.get("plan", {}).get("before", "")
    verdict = (
        f"Every command answers within the {TARGET_S:g} s target without torch or transformers."
        if not slow
        else f"Not yet within the target ({TARGET_S:g} s, neither torch nor transformers): "
        + "; ".join(slow)
        + "."
    )
    parts = [
        *section_head("## Command-line start-up", meta),
        f"Each command in a fresh `python -m ilora` process, {repeats} runs, wall time "
        "from outside the process (interpreter start included)"
        + (f"; before = revision `{before}`, run interleaved with after" if before else "")
        + ".",
        md_table(headers, [line for line, _ in made]).strip(),
        verdict,
    ]
    return "\n\n".join(parts) + "\n"
