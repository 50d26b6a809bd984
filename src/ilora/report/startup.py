"""Render ``results/startup/`` (``ilora bench startup``) as a RESULTS.md section.

Reads ``startup.csv`` (seconds per tree, command and repeat; whether torch and transformers
were imported) and ``meta.json``. Target of issue 15: ``ilora --help``, ``ilora list ...`` and
``ilora validate`` answer in under 0.5 s (median) and import neither torch nor transformers.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ilora.report._table import command_block, md_table, meta_line, read_csv, read_meta

TARGET_S = 0.5


def _cell(rows: list[dict[str, str]]) -> tuple[float, str]:
    """Return the median seconds and what the runs imported (``torch``, ``transformers``)."""
    median = statistics.median(float(r["seconds"]) for r in rows)
    heavy = [m for m in ("torch", "transformers") if any(r[m] == "True" for r in rows)]
    return median, ", ".join(heavy) or "neither"


def render(src: Path, img: Path) -> str:
    """Return the start-up section (no figures)."""
    del img
    rows = read_csv(src / "startup.csv")
    meta = read_meta(src)
    commands = list(dict.fromkeys(r["command"] for r in rows))
    trees = [t for t in ("before", "after") if any(r["tree"] == t for r in rows)]
    body, slow = [], []
    for command in commands:
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
        body.append(line)
        median, heavy = cells.get("after", (float("inf"), "not measured"))
        if median > TARGET_S or heavy != "neither":
            slow.append(f"`ilora {command}` ({median:.2f} s, imports {heavy})")
    headers = ["command"]
    for tree in trees:
        headers += [f"{tree}: median s", f"{tree}: imports"]
    headers += ["speed-up"] if "before" in trees else []
    repeats = len({r["repeat"] for r in rows})
    before = meta.get("plan", {}).get("before", "")
    verdict = (
        "Every command answers within the 0.5 s target without torch or transformers."
        if not slow
        else "Not yet within the target (0.5 s, neither torch nor transformers): "
        + "; ".join(slow)
        + "."
    )
    return (
        "\n\n".join(
            [
                "## Command-line start-up",
                command_block(str(meta.get("command", ""))).strip(),
                meta_line(meta),
                f"Each command in a fresh `python -m ilora` process, {repeats} runs, wall time "
                "from outside the process (interpreter start included)"
                + (f"; before = revision `{before}`, run interleaved with after" if before else "")
                + ".",
                md_table(headers, body).strip(),
                verdict,
            ]
        )
        + "\n"
    )
