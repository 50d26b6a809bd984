"""Render ``results/faults_control_median/``: the campaign target for ILoRA's robust form.

The same measurement as ``results/faults_control/`` (:mod:`ilora.report.faults_control`: the
faulty run against the control that loses the same updates, paired by seed), run with ILoRA's
``robust_products: median`` (this project's robust form of its aggregation, off by default), so
the two sections show what the robust form buys against the accepted Byzantine updates and what
it costs the control run. Reads the same files as that renderer.
"""

from __future__ import annotations

from pathlib import Path

from ilora.report import faults_control

TITLE = "## Fault campaign target with ILoRA's robust form (`robust_products: median`, ours)"


def render(src: Path, img: Path) -> str:
    """Return the target section of the robust-form runs under its own title."""
    return faults_control.render(src, img, TITLE)
