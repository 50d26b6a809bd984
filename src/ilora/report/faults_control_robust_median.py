"""Render ``results/faults_control_robust_median/``: the campaign target under the median.

The same measurement as ``results/faults_control/`` (:mod:`ilora.report.faults_control`: the
faulty run against the control that loses the same updates, paired by seed) for the methods whose
aggregation is a mean, with the coordinate-wise median (``fed.robust: median``) in place of the
trimmed mean on both runs (about 8 updates accepted a round in the faulty runs, 7 in the
controls). Both robust estimates are in the same family; the sections differ in seeds too (3
for the trimmed mean, 5 here), so read the paired intervals, not the means alone. Reads the
same files as that renderer.
"""

from __future__ import annotations

from pathlib import Path

from ilora.report import faults_control

TITLE = "## Fault campaign target under the coordinate-wise median (`fed.robust: median`)"


def render(src: Path, img: Path) -> str:
    """Return the target section of the median runs under its own title."""
    return faults_control.render(src, img, TITLE)
