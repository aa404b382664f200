"""Plots for ``toolkit layernorm-compare``: headline metrics, training curves, gradient flow,
hidden-unit correlation before and after normalisation, and achieved bandwidth."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from toolkit.plots import PLOTS_DIR
from toolkit.plots.figure import save_figure
from toolkit.studies.layernorm import (
    NORM_LABELS,
    PASSES,
    LayerNormReport,
    NormRun,
    SpeedResult,
    TrainingResult,
    implementation_label,
)

METRICS = (
    ("final_val_loss", "validation loss (nats/byte)"),
    ("steps_per_s", "training steps / s"),
    ("steps_to_90pct", "steps to 90% of final improvement"),
    ("peak_memory_bytes", "peak memory of a step (MB)"),
    ("loss_std", "training-loss std, detrended"),
    ("mean_abs_correlation_after", "mean |corr| of hidden units after norm"),
)


def _colors(n: int) -> list[str]:
    return [f"C{i}" for i in range(n)]


LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P")
"""One style per normalisation, so that identical curves (torch and custom LayerNorm) both show:
the first wide and solid, the next dashed and narrower on top of it."""


def _style(index: int) -> dict[str, Any]:
    return {
        "color": f"C{index}",
        "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
        "linewidth": max(1.0, 2.6 - 0.4 * index),
        "zorder": 2 + index,
    }


def plot_metric(ax: Axes, result: TrainingResult, metric: str, label: str) -> None:
    """One headline metric as a dot per normalisation (one row each), its value written beside it.
    Dots, not bars: the axis spans the values (not from 0), so that small differences show, and no
    bar's length pretends to measure from a zero that is not on the axis."""
    names = [NORM_LABELS[r.norm] for r in result.runs]
    values = np.array([float(getattr(r, metric)) for r in result.runs])
    if metric == "peak_memory_bytes":
        values = values / 1e6
    for i, value in enumerate(values):
        if math.isnan(value):
            ax.annotate("n/a", (0.5, i), xycoords=("axes fraction", "data"), va="center", fontsize="small")
            continue
        ax.plot([value], [i], MARKERS[i % len(MARKERS)], color=f"C{i}", markersize=8)
        ax.annotate(f"{value:.3g}", (value, i), textcoords="offset points", xytext=(0, 8), ha="center",
                    va="bottom", fontsize="small")  # fmt: skip
    ax.margins(x=0.2, y=0.2)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.4, -0.6)  # first norm on top, room for the value above each dot
    ax.set_xlabel(label, fontsize="small")
    ax.set_ylabel("normalisation", fontsize="small")
    ax.grid(axis="x", alpha=0.3)


def metrics_figure(result: TrainingResult) -> Figure:
    figure = Figure(figsize=(13, 6.5), layout="constrained")
    axes = figure.subplots(2, 3, sharey=True)
    for ax, (metric, label) in zip(axes.flat, METRICS, strict=True):
        plot_metric(ax, result, metric, label)
    for ax in axes[:, 1:].flat:
        ax.set_ylabel("")
        ax.tick_params(labelleft=False)
    figure.suptitle(
        f"Normalisations compared: byte-level GPT, {_steps_text(result)}, same seed and batches "
        f"({result.device}); axes span the values, not from 0"
    )
    return figure


def _steps_text(result: TrainingResult) -> str:
    done = result.steps_done
    return f"{result.settings.steps} steps" if done is None else f"{done} of {result.settings.steps} steps"


def plot_training_loss(ax: Axes, result: TrainingResult) -> None:
    """Training loss per step (light) and its moving average, one style per normalisation."""
    window = max(1, result.settings.steps // 20)
    for index, run in enumerate(result.runs):
        losses = np.asarray(run.train_losses)
        steps = np.arange(1, losses.size + 1)
        ax.plot(steps, losses, color=f"C{index}", alpha=0.15, linewidth=0.8)
        if losses.size >= window:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, label=NORM_LABELS[run.norm], **_style(index))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"training loss (nats/byte; line: mean of {window})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def plot_validation_loss(ax: Axes, result: TrainingResult) -> None:
    for index, run in enumerate(result.runs):
        marker = MARKERS[index % len(MARKERS)]
        ax.plot(run.val_steps, run.val_losses, marker=marker, label=NORM_LABELS[run.norm], **_style(index))
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss (nats/byte, eval mode)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def curves_figure(result: TrainingResult) -> Figure:
    figure = Figure(figsize=(13, 5), layout="constrained")
    left, right = figure.subplots(1, 2)
    plot_training_loss(left, result)
    plot_validation_loss(right, result)
    figure.suptitle(
        f"Training and validation loss, {_steps_text(result)} (data: {_short(result.corpus['source'])})"
    )
    return figure


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def plot_gradient_flow(ax: Axes, run: NormRun) -> None:
    """Gradient norm of each block's parameters over training (before clipping), log scale."""
    for layer, norms in run.grad_norms.items():
        ax.plot(run.grad_steps, norms, label=layer)
    ax.set_yscale("log")
    ax.set_title(NORM_LABELS[run.norm], fontsize="medium")
    ax.set_xlabel("training step")
    ax.set_ylabel("‖grad‖ of block parameters (L2)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


GRID_COLUMNS = 3


def gradient_flow_figure(result: TrainingResult) -> Figure:
    n = len(result.runs)
    columns = min(n, GRID_COLUMNS)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(4.6 * columns, 3.6 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, sharey=True, squeeze=False)).ravel()
    for ax, run in zip(axes, result.runs, strict=False):
        plot_gradient_flow(ax, run)
    for ax in axes[n:]:
        ax.set_visible(False)
    figure.suptitle("Gradient flow: per-block gradient norms over training (before clipping)")
    return figure


def plot_correlation(ax: Axes, matrix: np.ndarray, title: str) -> AxesImage:
    """A hidden-unit correlation matrix as a heatmap on [-1, 1]."""
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize="small")
    size = matrix.shape[0]
    ticks = [0, size // 2, size - 1] if size > 2 else list(range(size))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize="x-small")
    ax.set_xlabel("hidden unit", fontsize="small")
    ax.set_ylabel("hidden unit", fontsize="small")
    return image


def correlation_figure(result: TrainingResult) -> Figure:
    """Two rows (before and after the norm), a column per normalisation, one colour scale."""
    n = len(result.runs)
    figure = Figure(figsize=(max(6.0, 3.0 * n + 1.2), 6.6), layout="constrained")
    axes = np.asarray(figure.subplots(2, n, squeeze=False))
    image = None
    for column, run in enumerate(result.runs):
        name = NORM_LABELS[run.norm]
        image = plot_correlation(
            axes[0, column],
            run.correlation_before,
            f"{name}\nbefore: mean |r| {run.mean_abs_correlation_before:.2f}",
        )
        plot_correlation(
            axes[1, column],
            run.correlation_after,
            f"{name}\nafter: mean |r| {run.mean_abs_correlation_after:.2f}",
        )
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="Pearson correlation r")
    figure.suptitle("Hidden-unit correlation at the last block's first norm (one validation batch)")
    return figure


def plot_bandwidth(ax: Axes, result: SpeedResult, pass_name: str) -> None:
    """Achieved GB/s per shape and implementation (bars: 95% CI from the time's CI), with the copy
    bandwidth as the reference bar."""
    shapes = sorted({(r.rows, r.row_size) for r in result.rows}, key=lambda s: s[0] * s[1])
    names = list(dict.fromkeys(r.implementation for r in result.rows if r.pass_name == pass_name))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values, low, high = [], [], []
        for shape in shapes:
            row = next((r for r in result.rows if (r.rows, r.row_size) == shape and r.pass_name == pass_name
                        and r.implementation == name), None)  # fmt: skip
            if row is None:
                values.append(0.0)
                low.append(0.0)
                high.append(0.0)
                continue
            m = row.timing  # GB/s is bytes / time: the time's CI bounds give the rate's
            values.append(row.gb_per_s)
            low.append(row.gb_per_s - row.gb_per_s * m.median_ms / m.ci_high_ms)
            high.append(row.gb_per_s * m.median_ms / m.ci_low_ms - row.gb_per_s)
        hatch = "//" if name == "copy" else None
        ax.bar(np.arange(len(shapes)) + i * width, values, width, yerr=[low, high], capsize=3,
               label=implementation_label(name, result.norm), hatch=hatch, color=f"C{i}")  # fmt: skip
    ax.set_xticks(np.arange(len(shapes)) + width * (len(names) - 1) / 2, [f"{m}×{n}" for m, n in shapes])
    ax.set_xlabel("input shape (rows × row size)")
    ax.set_ylabel("achieved bandwidth (GB/s), bars: 95% CI")
    ax.set_title(pass_name)
    ax.grid(axis="y", alpha=0.3)


def speed_figure(result: SpeedResult) -> Figure:
    figure = Figure(figsize=(12, 5), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, pass_name in zip(axes, PASSES, strict=True):
        plot_bandwidth(ax, result, pass_name)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    norm = "RMSNorm" if result.norm == "rms" else "LayerNorm"
    figure.suptitle(f"{norm} bandwidth on {result.device} ({result.dtype}); copy = y.copy_(x), same run")
    return figure


def layernorm_figures(report: LayerNormReport) -> list[tuple[str, Callable[[], Figure]]]:
    """The file name and a builder of every figure the report has data for, in the order written."""
    figures: list[tuple[str, Callable[[], Figure]]] = []
    if report.speed is not None:
        speed = report.speed
        name = "rmsnorm_speed.png" if speed.norm == "rms" else "layernorm_speed.png"
        figures.append((name, lambda: speed_figure(speed)))
    if report.training is not None:
        training = report.training
        figures += [
            ("metrics_comparison.png", lambda: metrics_figure(training)),
            ("training_curves.png", lambda: curves_figure(training)),
            ("gradient_flow.png", lambda: gradient_flow_figure(training)),
            ("hidden_correlation.png", lambda: correlation_figure(training)),
        ]
    return figures


def save_layernorm_plots(report: LayerNormReport, directory: str | Path = PLOTS_DIR) -> list[Path]:
    """Write every figure the report has data for into ``directory``; returns the paths."""
    return [save_figure(build(), Path(directory) / name) for name, build in layernorm_figures(report)]
