"""The ablation picture: per variant, how far it moves the logits against how much it changes latency."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from toolkit.plots import ABLATION_PLOT
from toolkit.plots.figure import save_figure
from toolkit.studies.ablation import AblationResult

DEFAULT_PATH = ABLATION_PLOT


def plot_output_vs_latency(ax: Axes, result: AblationResult) -> None:
    """x: RMSE as % of the base logits' spread (log scale); y: latency change in % with its 95% CI."""
    study = result.latency
    if study is not None:
        floor = study.noise_floor_pct
        ax.axhspan(-floor, floor, color="0.85", zorder=0, label=f"A/A noise floor (±{floor:.1f}%)")
    ax.axhline(0.0, color="0.4", linewidth=0.8, zorder=1)
    for row in result.rows:
        x = 100.0 * row.output.rmse_over_base_std
        if row.latency is None:
            y, error = 0.0, None
        else:
            y = row.latency.diff_pct
            error = [[y - row.latency.ci_low_pct], [row.latency.ci_high_pct - y]]
        significant = row.latency is not None and row.latency.significant
        ax.errorbar(
            [x],
            [y],
            yerr=error,
            fmt="o",
            markerfacecolor=None if significant else "white",
            capsize=4,
            zorder=3,
            label=f"{row.change}{' (significant)' if significant else ''}",
        )
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)  # no marker or error bar on the frame
    ax.set_xlabel("output change: RMSE of logits / std of base logits (%)")
    ax.set_ylabel("latency change vs baseline (%), 95% CI" if study is not None else "latency not measured")
    ax.grid(True, which="both", alpha=0.3)
    # beside the axes, never over a point: the colours name the variants
    ax.legend(
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        title="variant (hollow: not significant)",
        title_fontsize="small",
    )


def save_ablation_plot(result: AblationResult, path: str | Path = DEFAULT_PATH) -> Path:
    """Build the figure, write it atomically to ``path`` and return the path."""
    return save_figure(ablation_figure(result), path)


def ablation_figure(result: AblationResult) -> Figure:
    """Output change against latency change, one marker per variant, titled with the config."""
    figure = Figure(figsize=(10, 5.5), layout="constrained")
    ax = figure.add_subplot()
    plot_output_vs_latency(ax, result)
    config = result.base_config
    title = (
        f"Ablations on d={config.d_model}, {config.n_heads} heads, {config.n_layers} layers: "
        "output change vs latency change"
    )
    if result.latency is not None:
        study = result.latency
        title += (
            f"\nbatch {study.batch} × {study.seq_len} tokens, {study.context['dtype']} on "
            f"{study.context['device_name']}"
        )
    ax.set_title(title, fontsize=10)
    return figure
