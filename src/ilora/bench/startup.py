"""``ilora bench startup``: how long the light commands take to answer, and what they import.

Each command (``ilora --help``, ``ilora list ...``, ``ilora validate CONFIG``) runs ``repeats``
times in a fresh ``python -m ilora`` process; the time is the process's wall time from the
outside (interpreter start included), and the process reports whether ``torch`` and
``transformers`` were imported when it ended. With ``before`` (a git revision) the same
commands run, interleaved run by run, from that revision's ``src/`` (``git archive``), so the
before/after ratio is measured side by side under the same load.

Files: ``startup.csv`` (one row per tree, command and repeat: seconds, whether torch and
transformers were loaded, the exit code), ``meta.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

Row = dict[str, Any]
SRC = Path(__file__).resolve().parents[2]  # this tree's src/
# runs ``ilora ARGS`` and prints, as its last stderr line, whether a module of torch or
# transformers was loaded and the exit code (tests/test_startup.py reads it too)
PROBE = (
    "import json, runpy, sys\n"
    "sys.argv = ['ilora', *json.loads(sys.argv[1])]\n"
    "code = 0\n"
    "try:\n"
    "    runpy.run_module('ilora', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)\n"
    "names = [n.partition('.')[0] for n in sys.modules]\n"
    "loaded = {m: m in names for m in ('torch', 'transformers')}\n"
    "print(json.dumps({**loaded, 'exit': code}), file=sys.stderr)\n"
)


@dataclass(frozen=True)
class Plan:
    """What one run measures (see the module docstring)."""

    commands: tuple[str, ...] = (
        "--help",
        "list algorithms",
        "list tasks",
        "list partitioners",
        "validate configs/smoke.yaml",
    )
    repeats: int = 7
    before: str = ""  # a git revision to compare with ("" = this tree only)
    threads: int = 1


QUICK = Plan(commands=("--help", "list tasks"), repeats=2)


def check_plan(plan: Plan) -> None:
    """Reject a plan that cannot run.

    Raises:
        ValueError: naming the option.

    """
    if plan.repeats < 1 or not plan.commands:
        raise ValueError("--repeats must be >= 1 and --commands not empty")


def checkout(revision: str, into: Path) -> Path:
    """Extract ``revision``'s ``src/`` into ``into`` (``git archive``); return that ``src``.

    Raises:
        ValueError: if git does not know ``revision``.

    """
    res = subprocess.run(
        ["git", "-C", str(SRC.parent), "archive", "--format=tar", revision, "src"],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        raise ValueError(f"--before {revision}: {res.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=BytesIO(res.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def time_command(src: Path, command: str) -> Row:
    """Run ``ilora <command>`` from ``src`` in a fresh process; return its time and imports."""
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    args = [sys.executable, "-c", PROBE, json.dumps(command.split())]
    t0 = time.perf_counter()
    res = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    found = json.loads(res.stderr.strip().splitlines()[-1])
    return {"seconds": seconds, **{k: found.get(k) for k in ("torch", "transformers", "exit")}}


def measure(plan: Plan, log: Any = print) -> list[Row]:
    """Return one row per tree, command and repeat, the trees interleaved run by run."""
    with tempfile.TemporaryDirectory(prefix="ilora-before-") as tmp:
        trees = {"after": SRC}
        if plan.before:
            trees = {"before": checkout(plan.before, Path(tmp)), **trees}
        rows: list[Row] = []
        for rep in range(plan.repeats):
            for command in plan.commands:
                for tree, src in trees.items():
                    row = {"tree": tree, "command": command, "repeat": rep}
                    rows.append({**row, **time_command(src, command)})
        for command in plan.commands:
            for tree in trees:
                mine = sorted(
                    r["seconds"] for r in rows if (r["tree"], r["command"]) == (tree, command)
                )
                log(f"{tree:6} ilora {command}: median {mine[len(mine) // 2]:.2f} s")
    return rows


def run(plan: Plan, out: Path, quick: bool, log: Any = print) -> None:
    """Measure ``plan`` and write ``out``'s files."""
    from ilora.bench.resultfiles import write_meta
    from ilora.bench.resultfiles import write_rows

    write_rows(out / "startup.csv", measure(plan, log))
    write_meta(
        out,
        quick,
        plan={"commands": list(plan.commands), "repeats": plan.repeats, "before": plan.before},
    )
