"""The section "ILoRA's claims, checked": each of the paper's claims and its measured answer.

Every answer is a paired difference over seeds with its 95% interval and the verdict of
:mod:`ilora.report.stats`, stated whichever way it falls. A claim whose runs are missing says
which variant would measure it (``ilora bench protocol --variants ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence

from ilora.report import stats
from ilora.report._table import CENTRAL
from ilora.report._table import md_table

Cell = Mapping[str, Mapping[int, float]]  # variant -> seed -> accuracy %
Key = tuple[str, str, float]  # task, ranks, alpha
FOCUS = ("ilora", "ilora-s")
BASELINES = ("fedit", "ffa-lora", "flora", "lora-fair", "flexlora", "hetlora")
# (variant, reference, what the difference isolates): the paper's component is the reference
ABLATIONS = (
    ("ilora+init=lora", "ilora", "QR init (reference) against standard LoRA init"),
    ("fedit", "ilora", "concatenated aggregation (reference) against FedAvg of the factors"),
    ("ilora", "ilora-s", "control variates on (reference) against off"),
    (
        "ilora-s+control_scope=head",
        "ilora-s",
        "control variates on every tensor (reference) against on the head only",
    ),
    (
        "ilora-s+control_scope=adapters",
        "ilora-s",
        "control variates on every tensor (reference) against on the adapters only",
    ),
    ("ilora+redistribute=svd", "ilora", "the paper's QR redistribution (reference) against SVD"),
    ("ilora+split=balanced", "ilora", "the paper's split B=Q, A=R (reference) against balanced"),
)


def _diff_cell(cell: Cell, a: str, b: str) -> str:
    if a not in cell or b not in cell:
        return "-"
    return stats.marked(stats.paired(cell[a], cell[b]))


def against_baselines(cells: Mapping[Key, Cell]) -> str:
    """Claim (i): ILoRA and ILoRA-S against the baselines under heterogeneous ranks."""
    body = []
    for (task, ranks, alpha), cell in sorted(cells.items()):
        if ranks != "heterogeneous":
            continue
        for focus in FOCUS:
            if focus in cell:
                row = [f"{task} α={alpha:g}", focus]
                body.append(row + [_diff_cell(cell, focus, b) for b in BASELINES])
    if not body:
        return ""
    headers = ["setting", "method", *(f"− {b}" for b in BASELINES)]
    return (
        "**(i) ILoRA and ILoRA-S against the baselines, heterogeneous ranks** (paired "
        "difference in test accuracy points, 95% CI):\n\n" + md_table(headers, body)
    )


def ablations(cells: Mapping[Key, Cell]) -> str:
    """Claim (ii): each component of ILoRA against its alternative, in every setting."""
    lines = []
    for variant, reference, what in ABLATIONS:
        measured = [
            f"{task} {ranks} α={alpha:g}: {_diff_cell(cell, reference, variant)}"
            for (task, ranks, alpha), cell in sorted(cells.items())
            if variant in cell and reference in cell
        ]
        present = {v for cell in cells.values() for v in cell}
        missing = ", ".join(f"`{v}`" for v in (reference, variant) if v not in present)
        answer = "; ".join(measured) if measured else f"not measured (add {missing or 'both'})"
        lines.append(f"- {what}: {reference} − {variant}: {answer}.")
    return "**(ii) Ablations** (reference − alternative, points):\n\n" + "\n".join(lines)


def gaps_by_setting(cells: Mapping[Key, Cell]) -> str:
    """Claim (iii): how ILoRA's and ILoRA-S's gap to FedIT moves with alpha and the ranks."""
    body = [
        [task, ranks, f"{alpha:g}", *(_diff_cell(cell, f, "fedit") for f in FOCUS)]
        for (task, ranks, alpha), cell in sorted(cells.items())
    ]
    if not body:
        return ""
    headers = ["task", "ranks", "α", *(f"{f} − fedit" for f in FOCUS)]
    return "**(iii) The gap to FedIT by setting:**\n\n" + md_table(headers, body)


def to_centralized(cells: Mapping[Key, Cell]) -> str:
    """Claim (iv): the best federated method's distance to centralized training."""
    body = []
    for (task, ranks, alpha), cell in sorted(cells.items()):
        fed = {v: s for v, s in cell.items() if v != CENTRAL}
        if CENTRAL not in cell or not fed:
            continue
        best = max(fed, key=lambda v: stats.mean_ci(fed[v].values()).mean)
        body.append([task, ranks, f"{alpha:g}", best, _diff_cell(cell, best, CENTRAL)])
    if not body:
        return ""
    headers = ["task", "ranks", "α", "best federated", "− centralized"]
    return (
        "**(iv) Distance to centralized training** (the centralized line takes as many local "
        "steps per round as all sampled clients together: equal total steps):\n\n"
        + md_table(headers, body)
    )


def render(cells: Mapping[Key, Cell]) -> str:
    """Return the claims section (empty without runs)."""
    parts: Sequence[str] = [
        against_baselines(cells),
        ablations(cells),
        gaps_by_setting(cells),
        to_centralized(cells),
    ]
    body = "\n\n".join(p for p in parts if p)
    return f"### ILoRA's claims, checked\n\n{body}\n" if body else ""
