"""The arguments and options of ``ilora run``, ``compare``, ``validate`` and ``bench``.

Declared once as ``Annotated`` types, so a command's signature lists its parameters in one
line each and the help text lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigArg = Annotated[Path, typer.Argument(help="experiment YAML (see configs/)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a dotted key (repeatable): fed.rounds=3")
]

# ---- ilora run
RunConfigArg = Annotated[
    Path | None, typer.Argument(help="experiment YAML (see configs/); omit with --resume")
]
RunOutOpt = Annotated[
    Path | None,
    typer.Option(help="run directory (default: a new runs/<algorithm>-<task>-seed<s>-<time>)"),
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option(help="continue the run in this directory from its last valid checkpoint"),
]
OverwriteOpt = Annotated[
    bool, typer.Option(help="replace the run already in --out (default: refuse)")
]

# ---- ilora compare
AlgorithmsOpt = Annotated[str, typer.Option(help="comma-separated names (`ilora list algorithms`)")]
SeedsOpt = Annotated[str, typer.Option(help="comma-separated seeds")]
CompareOutOpt = Annotated[Path, typer.Option(help="directory for the runs and the comparison")]
RerunOpt = Annotated[
    bool, typer.Option(help="run again even where a finished run of the same config exists")
]

# ---- ilora bench quality, protocol and the run campaigns (dp, faults, lr)
WorkersOpt = Annotated[int, typer.Option(help="runs at once, 1 torch thread each", min=1)]

# ---- ilora bench quality and protocol: the grid's axes (None: the command's preset)
TasksOpt = Annotated[str, typer.Option(help="comma-separated tasks")]
RankSettingsOpt = Annotated[
    str | None, typer.Option(help="compared rank settings: heterogeneous,homogeneous")
]
AlphasOpt = Annotated[str | None, typer.Option(help="compared Dirichlet alphas, e.g. 0.1,0.5")]
GridSeedsOpt = Annotated[str | None, typer.Option(help="comma-separated seeds, e.g. 0,1,2")]

# ---- ilora bench: every measurement's --out (``bench.resultfiles.results_dir``)
BenchOutOpt = Annotated[
    Path | None,
    typer.Option(help="results directory (default results/<name>; --quick: runs/quick/<name>)"),
]

# ---- ilora bench comm
CommConfigArg = Annotated[Path, typer.Argument(help="experiment YAML the methods run on")]
CommRunsOpt = Annotated[
    Path | None, typer.Option(help="check these finished runs instead of running")
]
CommAlgorithmsOpt = Annotated[str, typer.Option(help="comma-separated names, or all")]
CommRoundsOpt = Annotated[int, typer.Option(help="rounds per method (each runs 1 local step)")]
CommQuickOpt = Annotated[bool, typer.Option(help="configs/smoke.yaml, seconds")]
CommRunsDirOpt = Annotated[
    Path | None,
    typer.Option(help="run dirs (default runs/bench-comm; quick: runs/quick/comm/runs)"),
]
