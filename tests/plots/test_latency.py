"""The latency plots: a PNG with labelled axes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from plot_layout import assert_readable, overlapping_texts

from toolkit.plots.latency import AXIS_LABELS, FIXED_LABEL, LATENCY_LABEL, latency_figure, save_latency_plot
from toolkit.studies.latency import LatencyResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_is_png_with_labelled_axes(tiny_sweep: LatencyResult, tmp_path: Path) -> None:
    """The figure has the swept parameter and latency (ms) on its axes; the file is a PNG."""
    figure = latency_figure(tiny_sweep)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    assert ax.get_xlabel() == AXIS_LABELS["layers"]
    assert ax.get_ylabel() == LATENCY_LABEL
    assert "(ms)" in LATENCY_LABEL
    assert "d=24" in figure.get_suptitle()  # the fixed config, above both panels
    path = save_latency_plot(tiny_sweep, f"{tmp_path}/sweep.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_both_fits_and_the_fixed_config_are_drawn_readably(tiny_sweep: LatencyResult) -> None:
    """Linear axes carry the straight line, log-log axes the power law; the fixed value is marked
    on both; units on the axes; no two texts overlap."""
    figure = latency_figure(tiny_sweep)
    assert_readable(figure)
    linear, loglog = figure.axes
    assert (linear.get_xscale(), loglog.get_xscale(), loglog.get_yscale()) == ("linear", "log", "log")
    for ax, fit in ((linear, "linear fit"), (loglog, "power-law fit")):
        labels = [line.get_label() for line in ax.get_lines()]
        assert any(label.startswith(fit) for label in labels), labels
        fixed = [line for line in ax.get_lines() if line.get_label().startswith(FIXED_LABEL)]
        assert len(fixed) == 1
        assert list(fixed[0].get_xdata()) == [tiny_sweep.default_value] * 2
        assert "(" in ax.get_xlabel()  # a unit or what is counted
    # the power law through the points: A·x^k at the swept values, from an independent NumPy fit
    x = np.array([p.value for p in tiny_sweep.points], dtype=float)
    y = np.array([p.measurement.median_ms for p in tiny_sweep.points])
    k, log_a = np.polyfit(np.log(x), np.log(y), 1)
    assert tiny_sweep.trend.exponent == pytest.approx(k)
    assert tiny_sweep.trend.loglog_scale_ms == pytest.approx(np.exp(log_a))


def test_close_values_keep_their_tick_labels_apart(tiny_sweep: LatencyResult) -> None:
    """1,024 and 1,100 on a log axis would overlap: the second label is dropped, the point stays."""
    points = [
        dataclasses.replace(p, value=v) for p, v in zip(tiny_sweep.points, (1024, 1100, 4096), strict=True)
    ]
    crowded = dataclasses.replace(tiny_sweep, points=points, default_value=1100)
    figure = latency_figure(crowded)
    assert overlapping_texts(figure) == []
    loglog = figure.axes[1]
    shown = [t.get_text() for t in loglog.get_xticklabels() if t.get_visible()]
    assert shown == ["1,024", "4,096"]
    assert list(loglog.get_xticks()) == [1024, 1100, 4096]
