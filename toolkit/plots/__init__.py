"""matplotlib figures from study results: the only place that imports matplotlib.

Plot helpers take an ``Axes`` and data (``plot_x(ax, frame)``); ``save_figure`` writes atomically
and closes the figure. No global pyplot state: figures are made with ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.figure import Figure

from toolkit.files import atomic_path

PLOTS_DIR = Path("plots")


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save ``figure`` as PNG to ``path`` through a temporary file, then close it."""
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format=target.suffix.lstrip(".") or "png")
    figure.clear()
    return target
