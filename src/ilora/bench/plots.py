"""Figures of ``ilora compare``: the shared helpers of :mod:`ilora.report._plot` (Agg backend)."""

from __future__ import annotations

from ilora.report._plot import accuracy_baselines, metric_vs_round

__all__ = ["accuracy_baselines", "metric_vs_round"]
