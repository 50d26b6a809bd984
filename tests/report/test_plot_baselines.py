"""Accuracy plots carry chance and majority-class lines, so a curve reads against them."""

from __future__ import annotations

import pytest

from ilora.report._plot import accuracy_baselines
from ilora.report._plot import metric_vs_round
from ilora.report._plot import plt


def test_baselines_are_chance_and_the_majority_share() -> None:
    assert accuracy_baselines(4, 0.4) == {"chance (1/4)": 25.0, "majority class": 40.0}


def test_accuracy_plot_draws_a_labelled_horizontal_line_per_baseline() -> None:
    runs = [
        {
            "algorithm": "fedit",
            "history": [{"round": 1, "accuracy": 0.5}, {"round": 2, "accuracy": 0.6}],
        }
    ]
    fig = metric_vs_round(runs, "accuracy", "t", "accuracy %", accuracy_baselines(3, 0.5))
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["fedit"].get_ydata()) == pytest.approx([50.0, 60.0])
    assert list(lines["chance (1/3)"].get_ydata()) == pytest.approx([100 / 3] * 2)
    assert list(lines["majority class"].get_ydata()) == [50.0, 50.0]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"fedit", "chance (1/3)", "majority class"} <= set(legend)
    plt.close(fig)
