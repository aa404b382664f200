"""Plots for ``toolkit latency``: median latency against the swept value, IQR band, fitted trend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from toolkit.plots import PLOTS_DIR
from toolkit.plots.figure import drop_overlapping_tick_labels, save_figure
from toolkit.studies.latency import LatencyResult

AXIS_LABELS = {
    "seq-len": "sequence length S (tokens)",
    "vocab": "vocabulary size V (tokens)",
    "d-model": "model width d_model (features)",
    "heads": "attention heads (count; head size = d_model / heads)",
    "layers": "layers (transformer blocks)",
    "mlp": "MLP width d_mlp (hidden units)",
    "batch": "batch size B (sequences)",
}
LATENCY_LABEL = "forward latency, median (ms)"
SYMBOLS = {
    "seq-len": "S",
    "vocab": "V",
    "d-model": "d",
    "heads": "h",
    "layers": "L",
    "mlp": "d_mlp",
    "batch": "B",
}
FIXED_LABEL = "fixed config"


def default_plot_path(vary: str) -> Path:
    return PLOTS_DIR / f"latency_{vary}.png"


def _points(ax: Axes, result: LatencyResult) -> np.ndarray:
    """Median with its IQR band and 95% CI bars, and the fixed config's value marked; returns x."""
    x = np.array([p.value for p in result.points], dtype=np.float64)
    median = np.array([p.measurement.median_ms for p in result.points])
    q25 = np.array([p.measurement.q25_ms for p in result.points])
    q75 = np.array([p.measurement.q75_ms for p in result.points])
    ci = np.array(
        [[p.measurement.ci_low_ms for p in result.points], [p.measurement.ci_high_ms for p in result.points]]
    )
    ax.fill_between(x, q25, q75, alpha=0.25, color="C0", label="IQR (25–75%)")
    ax.errorbar(
        x, median, yerr=np.abs(ci - median), fmt="o", color="C0", capsize=3, label="median (bars: 95% CI)"
    )
    ax.axvline(
        result.default_value,
        color="0.45",
        linestyle="--",
        linewidth=1,
        label=f"{FIXED_LABEL}: {SYMBOLS[result.vary]}={result.default_value:,}",
    )
    ax.set_xlabel(AXIS_LABELS[result.vary])
    ax.set_ylabel(LATENCY_LABEL)
    ax.grid(alpha=0.3)
    return x


def plot_latency(ax: Axes, result: LatencyResult) -> None:
    """Linear axes: the points and the least-squares line (and the quadratic for seq-len)."""
    x = _points(ax, result)
    grid = np.linspace(x.min(), x.max(), 200)
    trend, symbol = result.trend, SYMBOLS[result.vary]
    ax.plot(
        grid,
        trend.intercept_ms + trend.slope_ms * grid,
        ":",
        color="C2",
        label=f"linear fit {trend.intercept_ms:.3g} + {trend.slope_ms:.3g}·{symbol} ms "
        f"(R² {trend.r2_linear:.2f})",
    )
    if trend.quadratic is not None:
        a, b, c = trend.quadratic
        ax.plot(
            grid,
            a + b * grid + c * grid**2,
            "--",
            color="C3",
            label=f"quadratic fit (R² {trend.r2_quadratic:.2f})",
        )
    ax.set_ylim(bottom=0)
    ax.set_title("linear axes: the linear fit", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")


def plot_latency_loglog(ax: Axes, result: LatencyResult) -> None:
    """Log-log axes: the points and the power law A·x^k, a straight line there."""
    x = _points(ax, result)
    grid = np.geomspace(x.min(), x.max(), 200)
    trend, symbol = result.trend, SYMBOLS[result.vary]
    ax.plot(
        grid,
        trend.loglog_scale_ms * grid**trend.exponent,
        "-.",
        color="C1",
        label=f"power-law fit ∝ {symbol}^{trend.exponent:.2f} (R² {trend.r2_loglog:.2f})",
    )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_xticks(x, [f"{int(v):,}" for v in x])
    ax.minorticks_off()
    ax.set_title("log-log axes: the power-law fit", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")


def latency_figure(result: LatencyResult) -> Figure:
    """A figure for one sweep, titled with the fixed config and the device."""
    figure = Figure(figsize=(13, 5), layout="constrained")
    linear, loglog = figure.subplots(1, 2)
    plot_latency(linear, result)
    plot_latency_loglog(loglog, result)
    c, ctx = result.base_config, result.context
    fixed = {
        "seq-len": f"S={result.seq_len}",
        "vocab": f"V={c.vocab_size}",
        "d-model": f"d={c.d_model}",
        "heads": f"heads={c.n_heads}",
        "layers": f"L={c.n_layers}",
        "mlp": f"d_mlp={c.d_mlp}",
        "batch": f"B={result.batch}",
    }
    fixed_text = ", ".join(text for name, text in fixed.items() if name != result.vary)
    compiled = ", torch.compile" if result.compiled else ""
    figure.suptitle(
        f"Forward latency vs {result.vary}\n{fixed_text}; {ctx.device_name}, {ctx.dtype}, "
        f"{ctx.threads} threads{compiled}"
    )
    drop_overlapping_tick_labels(figure)
    return figure


def save_latency_plot(result: LatencyResult, path: str | Path | None = None) -> Path:
    """Write the sweep's plot (default ``plots/latency_<vary>.png``) and return its path."""
    return save_figure(latency_figure(result), path if path is not None else default_plot_path(result.vary))
