"""The latency plots: a PNG with labelled axes."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from toolkit.plots.latency import AXIS_LABELS, LATENCY_LABEL, latency_figure, save_latency_plot
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
    assert "d=24" in ax.get_title()
    path = save_latency_plot(tiny_sweep, f"{tmp_path}/sweep.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
