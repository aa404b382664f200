"""Plots for ``toolkit layernorm-compare``: headline metrics, training curves, gradient flow,
hidden-unit correlation before and after normalisation, and achieved bandwidth."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from toolkit.plots import PLOTS_DIR
from toolkit.plots.figure import save_figure
from toolkit.studies.layernorm import (
    IMPLEMENTATION_LABELS,
    NORM_LABELS,
    PASSES,
    LayerNormReport,
    NormRun,
    SpeedResult,
    TrainingResult,
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


def plot_metric(ax: Axes, result: TrainingResult, metric: str, label: str) -> None:
    """One headline metric as a bar per normalisation, the value written on each bar."""
    names = [NORM_LABELS[r.norm] for r in result.runs]
    values = np.array([float(getattr(r, metric)) for r in result.runs])
    if metric == "peak_memory_bytes":
        values = values / 1e6
    bars = ax.bar(range(len(values)), np.nan_to_num(values), color=_colors(len(values)))
    for bar, value in zip(bars, values, strict=True):
        text = "n/a" if math.isnan(value) else f"{value:.3g}"
        position = (bar.get_x() + bar.get_width() / 2, bar.get_height())
        ax.annotate(text, position, ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    ax.set_title(label, fontsize="medium")
    ax.grid(axis="y", alpha=0.3)


def metrics_figure(result: TrainingResult) -> Figure:
    figure = Figure(figsize=(13, 7.5), layout="constrained")
    axes = figure.subplots(2, 3)
    for ax, (metric, label) in zip(axes.flat, METRICS, strict=True):
        plot_metric(ax, result, metric, label)
    s = result.settings
    figure.suptitle(
        f"Normalisations compared: byte-level GPT, {s.steps} steps, same seed and batches ({result.device})"
    )
    return figure


def plot_training_loss(ax: Axes, result: TrainingResult) -> None:
    """Training loss per step (light) and its moving average (dark), one colour per normalisation."""
    window = max(1, result.settings.steps // 20)
    for color, run in zip(_colors(len(result.runs)), result.runs, strict=True):
        losses = np.asarray(run.train_losses)
        steps = np.arange(1, losses.size + 1)
        ax.plot(steps, losses, color=color, alpha=0.2, linewidth=0.8)
        if losses.size >= window:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color=color, label=NORM_LABELS[run.norm])
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (nats/byte; line: mean of {window})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def plot_validation_loss(ax: Axes, result: TrainingResult) -> None:
    for color, run in zip(_colors(len(result.runs)), result.runs, strict=True):
        ax.plot(run.val_steps, run.val_losses, "o-", color=color, label=NORM_LABELS[run.norm])
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/byte, eval mode)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def curves_figure(result: TrainingResult) -> Figure:
    figure = Figure(figsize=(13, 5), layout="constrained")
    left, right = figure.subplots(1, 2)
    plot_training_loss(left, result)
    plot_validation_loss(right, result)
    figure.suptitle(f"Training and validation loss ({result.corpus['source']})")
    return figure


def plot_gradient_flow(ax: Axes, run: NormRun) -> None:
    """Gradient norm of each block's parameters over training (before clipping), log scale."""
    for layer, norms in run.grad_norms.items():
        ax.plot(run.grad_steps, norms, label=layer)
    ax.set_yscale("log")
    ax.set_title(NORM_LABELS[run.norm], fontsize="medium")
    ax.set_xlabel("step")
    ax.set_ylabel("‖grad‖ of block parameters")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def gradient_flow_figure(result: TrainingResult) -> Figure:
    n = len(result.runs)
    figure = Figure(figsize=(4.2 * n, 3.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, n, sharey=True))
    for ax, run in zip(axes, result.runs, strict=True):
        plot_gradient_flow(ax, run)
    figure.suptitle("Gradient flow: per-block gradient norms over training")
    return figure


def plot_correlation(ax: Axes, matrix: np.ndarray, title: str) -> None:
    """A hidden-unit correlation matrix as a heatmap on [-1, 1]."""
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def correlation_figure(result: TrainingResult) -> Figure:
    n = len(result.runs)
    figure = Figure(figsize=(7.5, 3.4 * n), layout="constrained")
    axes = np.asarray(figure.subplots(n, 2)).reshape(n, 2)
    for (before, after), run in zip(axes, result.runs, strict=True):
        name = NORM_LABELS[run.norm]
        plot_correlation(
            before, run.correlation_before, f"{name}: before (mean |r| {run.mean_abs_correlation_before:.2f})"
        )
        plot_correlation(
            after, run.correlation_after, f"{name}: after (mean |r| {run.mean_abs_correlation_after:.2f})"
        )
    figure.suptitle("Hidden-unit correlation at the last block's first norm (one validation batch)")
    return figure


def plot_bandwidth(ax: Axes, result: SpeedResult, pass_name: str) -> None:
    """Achieved GB/s per shape and implementation, with the copy bandwidth as the reference bar."""
    shapes = sorted({(r.rows, r.row_size) for r in result.rows}, key=lambda s: s[0] * s[1])
    names = list(dict.fromkeys(r.implementation for r in result.rows if r.pass_name == pass_name))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = []
        for shape in shapes:
            row = next((r for r in result.rows if (r.rows, r.row_size) == shape and r.pass_name == pass_name
                        and r.implementation == name), None)  # fmt: skip
            values.append(row.gb_per_s if row is not None else 0.0)
        hatch = "//" if name == "copy" else None
        ax.bar(np.arange(len(shapes)) + i * width, values, width, label=IMPLEMENTATION_LABELS.get(name, name),
               hatch=hatch, color=f"C{i}")  # fmt: skip
    ax.set_xticks(np.arange(len(shapes)) + width * (len(names) - 1) / 2, [f"{m}×{n}" for m, n in shapes])
    ax.set_ylabel("achieved GB/s")
    ax.set_title(pass_name)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def speed_figure(result: SpeedResult) -> Figure:
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, pass_name in zip(figure.subplots(1, 2), PASSES, strict=True):
        plot_bandwidth(ax, result, pass_name)
    figure.suptitle(f"LayerNorm bandwidth on {result.device} ({result.dtype}); copy = y.copy_(x), same run")
    return figure


def layernorm_figures(report: LayerNormReport) -> list[tuple[str, Callable[[], Figure]]]:
    """The file name and a builder of every figure the report has data for, in the order written."""
    figures: list[tuple[str, Callable[[], Figure]]] = []
    if report.speed is not None:
        speed = report.speed
        figures.append(("layernorm_speed.png", lambda: speed_figure(speed)))
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
