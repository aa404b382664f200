"""The layernorm-compare figures from a real (tiny) study: labels and units, no overlapping text,
identical curves both visible, the metrics' axes spanning their values, CI bars on the bandwidth."""

from __future__ import annotations

import pytest
import torch
from matplotlib.container import ErrorbarContainer
from plot_layout import assert_readable, overlapping_texts
from tiny import TINY_TRAINING

from toolkit.plots.layernorm import (
    correlation_figure,
    curves_figure,
    gradient_flow_figure,
    metrics_figure,
    speed_figure,
)
from toolkit.studies import layernorm as study
from toolkit.studies.layernorm import NORM_LABELS

CPU = torch.device("cpu")
DPI = 120  # as save_figure writes them


@pytest.fixture(scope="module")
def training() -> study.TrainingResult:
    return study.train_norms(CPU, TINY_TRAINING, study.stdlib_corpus(max_bytes=100_000))


@pytest.fixture(scope="module")
def speed() -> study.SpeedResult:
    return study.measure_speed(CPU, shapes=[(64, 32), (256, 64)], budget_s=0.0, backends=["torch-ops"])


def test_speed_figure_has_ci_bars_and_a_legend_off_the_bars(speed: study.SpeedResult) -> None:
    figure = speed_figure(speed)
    assert_readable(figure)
    for ax in figure.axes:
        assert ax.get_legend() is None  # one legend for the figure, below the panels
        assert "GB/s" in ax.get_ylabel()
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 3  # torch, custom, copy: each with its 95% CI
    assert len(figure.legends) == 1


def test_metrics_axes_span_the_values(training: study.TrainingResult) -> None:
    """Validation loss (about 5 nats/byte here) on an axis that does not start at 0."""
    figure = metrics_figure(training)
    overlaps = overlapping_texts(figure)
    assert overlaps == []
    for ax in figure.axes:
        assert ax.get_xlabel()  # the quantity and its unit
    loss_ax = figure.axes[0]
    losses = [run.final_val_loss for run in training.runs]
    low, high = loss_ax.get_xlim()
    assert 0 < low <= min(losses)
    assert max(losses) <= high
    assert [t.get_text() for t in loss_ax.get_yticklabels()] == [NORM_LABELS[r.norm] for r in training.runs]


def test_identical_curves_are_drawn_distinguishably(training: study.TrainingResult) -> None:
    """torch and custom LayerNorm train to the same numbers: their lines differ in style and width."""
    torch_run, custom_run = training.run("torch"), training.run("custom")
    assert torch_run is not None
    assert custom_run is not None
    assert torch_run.train_losses == pytest.approx(custom_run.train_losses, rel=1e-4)
    figure = curves_figure(training)
    assert_readable(figure)
    for ax in figure.axes:
        styled = {line.get_label(): (line.get_linestyle(), line.get_linewidth()) for line in ax.get_lines()}
        assert styled["torch LayerNorm"] != styled["custom LayerNorm"]
        assert styled["torch LayerNorm"][1] > styled["custom LayerNorm"][1]  # the wider one below


def test_gradient_flow_fits_a_page(training: study.TrainingResult) -> None:
    figure = gradient_flow_figure(training)
    assert_readable(figure)
    width, height = figure.get_size_inches() * DPI
    assert width <= 1800
    assert height <= 1200
    titled = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert len(titled) == len(training.runs)


def test_correlation_has_labels_and_one_colour_scale(training: study.TrainingResult) -> None:
    figure = correlation_figure(training)
    assert_readable(figure)
    colorbars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1
    assert "correlation" in colorbars[0].get_ylabel()
    assert colorbars[0].get_ylim() == (-1.0, 1.0)
