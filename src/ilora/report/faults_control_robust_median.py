"""Render ``results/faults_control_robust_median/``: the campaign target under the median.

The same measurement as ``results/faults_control/`` (:mod:`ilora.report.faults_control`: the
faulty run against the control that loses the same updates, paired by seed) for the methods whose
aggregation is a mean, with the coordinate-wise median (``fed.robust: median``) in place of the
trimmed mean on both runs. The sections differ in seeds too (read them from each section's
setting line), so compare the paired intervals, not the means alone. Reads the same files as that
renderer.
"""

from __future__ import annotations

from pathlib import Path

from ilora.report import faults_control

TITLE = "## Fault campaign target under the coordinate-wise median (`fed.robust: median`)"


def render(src: Path, img: Path) -> str:
    """Return the target section of the median runs under its own title."""
    return faults_control.render(src, img, TITLE)
