"""The scaling picture of ``toolkit matmul`` over several worker counts: speed-up against workers."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from toolkit.plots import MATMUL_PLOT
from toolkit.plots.figure import save_figure
from toolkit.studies.matmul import MatmulResult

DEFAULT_PATH = MATMUL_PLOT


def plot_speedup(ax: Axes, result: MatmulResult) -> None:
    """Speed-up over one process and over NumPy per worker count, with the ideal min(workers, cores)."""
    runs = sorted(result.runs, key=lambda run: run.workers)
    workers = [run.workers for run in runs]
    ideal = [min(w, result.cores) for w in workers]
    ax.plot(workers, ideal, linestyle="--", color="0.5", label=f"ideal: min(workers, {result.cores} cores)")
    ax.axhline(1.0, color="0.7", linewidth=0.8)
    ax.plot(
        workers,
        [run.speedup_vs_serial for run in runs],
        "o-",
        label=f"vs 1 process ({result.kernel}, 1 thread)",
    )
    ax.plot(workers, [run.speedup_vs_numpy for run in runs], "s-", label="vs NumPy matmul (all cores)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(workers, [str(w) for w in workers])
    ax.set_xlabel("workers (processes)")
    ax.set_ylabel(f"speed-up (median of {result.repeat} rounds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def save_scaling_plot(result: MatmulResult, path: str | Path = DEFAULT_PATH) -> Path:
    """Build the figure, write it atomically to ``path`` and return the path."""
    return save_figure(scaling_figure(result), path)


def scaling_figure(result: MatmulResult) -> Figure:
    """Speed-up against workers, titled with the product's shape, split, kernel and backend."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.add_subplot()
    plot_speedup(ax, result)
    ax.set_title(
        f"{result.n}×{result.k} @ {result.k}×{result.m} {result.dtype}, split {result.split}, "
        f"kernel {result.kernel}, {result.backend}",
        fontsize=10,
    )
    return figure
