"""How much the chosen rates depend on the tuning score's window (``tune.csv``'s longer windows).

The tuning rule scores a rate by the mean of its last ``score_window`` validation evaluations
on one seed (``meta.json`` rules). When a method's validation accuracy still swings at the end
of its tuning run (rounds whose clients hold mostly one class), the winner can be decided by
the luck of those few evaluations. ``ilora bench protocol`` therefore also scores every tuning
run over longer windows with the rule's own functions and writes each window's score and
choice beside the rule's (``val_score_lastW``, ``chosen_lastW``). This subsection lists each
method's choice under each window: a sensitivity study of the rule, not a second rule (the
comparison runs at the rule's rates). A task whose rows were written before those columns, and
whose tuning histories were not kept to rebuild them, is named and left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence

from ilora.report._table import md_table
from ilora.report._table import num

Row = Mapping[str, str]
Choice = tuple[float, float]  # a chosen rate and its score (%)
PREFIX = "chosen_last"  # tune.csv's choice under a longer window W: chosen_lastW


def windows(tune: Sequence[Row]) -> list[int]:
    """Return the longer windows ``tune.csv`` holds choices for, ascending."""
    names = tune[0].keys() if tune else ()
    return sorted(int(c[len(PREFIX) :]) for c in names if c.startswith(PREFIX))


def _choice(rows: Sequence[Row], suffix: str) -> Choice | None:
    """Return the rate ``rows`` (one variant) chose under one window's columns, and its score."""
    picked = [r for r in rows if r.get(f"chosen{suffix}") == "1"]
    if not picked:
        return None  # every rate stopped or unfinished
    return float(picked[0]["lr"]), num(picked[0][f"val_score{suffix}"])


def _rate(choice: Choice | None) -> float | None:
    return None if choice is None else choice[0]


def _cell(choice: Choice | None, rule: Choice | None) -> str:
    if choice is None:
        return "none finished"
    moved = " ◆" if choice[0] != _rate(rule) else ""
    return f"{choice[0]:.3g} ({choice[1]:.1f}){moved}"


def _task(task: str, rows: Sequence[Row], longer: Sequence[int], rule: int) -> str:
    """Return one task's table (a column per window) and how many choices each window moves."""
    by_variant: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    body, moved = [], dict.fromkeys(longer, 0)
    for variant, own in sorted(by_variant.items()):
        first = _choice(own, "")
        picks = {w: _choice(own, f"_last{w}") for w in longer}
        for w, pick in picks.items():
            moved[w] += _rate(pick) != _rate(first)
        body.append([variant, _cell(first, first), *(_cell(picks[w], first) for w in longer)])
    headers = ["method", f"last {rule} (the rule)", *(f"last {w}" for w in longer)]
    counts = ", ".join(f"{moved[w]} of {len(body)} with the last {w}" for w in longer)
    return f"**{task}**\n\n{md_table(headers, body)}\nMethods whose choice moves: {counts}.\n"


def render(tune: Sequence[Row], rule: int) -> str:
    """Return the subsection for every task whose rows hold the longer windows' choices."""
    longer = windows(tune)
    by_task: dict[str, list[Row]] = defaultdict(list)
    for r in tune:
        by_task[r["task"]].append(r)
    parts, missing = [], []
    for task, rows in sorted(by_task.items()):
        if longer and all(r.get(f"{PREFIX}{w}", "") != "" for r in rows for w in longer):
            parts.append(_task(task, rows, longer, rule))
        else:
            missing.append(task)
    if not parts:
        return ""
    return "\n".join([_HEAD.format(rule=rule), *parts, _missing(missing)])


_HEAD = (
    "### How much the chosen rates depend on the score window\n\n"
    "The rule scores a rate by its last {rule} validation evaluations on one seed. Every tuning "
    "run is also scored over longer windows by the same functions; each cell is the rate that "
    "window would choose (its score, %), ◆ where it differs from the rule's. The comparison "
    "runs at the rule's rates; this shows how firmly one tuning seed decided them.\n"
)


def _missing(tasks: Sequence[str]) -> str:
    if not tasks:
        return ""
    return (
        f"Not recomputable: {', '.join(tasks)} (tuned before the run records were kept; "
        "tune.csv holds only the rule's scores for them).\n"
    )
