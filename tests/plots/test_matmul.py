"""The matmul scaling plot from a real two-point sweep: labelled axes, no overlapping text, the
speed-ups drawn are the run's own."""

from __future__ import annotations

import pytest
from plot_layout import assert_readable

from toolkit.plots.matmul import scaling_figure
from toolkit.studies.matmul import MatmulSettings, make_inputs, run_matmul


def test_scaling_plot_is_readable_and_shows_the_runs() -> None:
    a, b = make_inputs(48, 40, 32, "float64", seed=0)
    result = run_matmul(a, b, MatmulSettings(workers=(1, 2), repeat=2))
    figure = scaling_figure(result)
    assert_readable(figure)
    ax = figure.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    serial = next(line for label, line in lines.items() if label.startswith("vs 1 process"))
    runs = sorted(result.runs, key=lambda run: run.workers)
    assert list(serial.get_xdata()) == [1, 2]
    assert list(serial.get_ydata()) == pytest.approx([run.speedup_vs_serial for run in runs])
