"""matplotlib figures from study results: the only place that imports matplotlib.

Plot helpers take an ``Axes`` and data (``plot_x(ax, frame)``); ``save_figure`` (in
:mod:`toolkit.plots.figure`) writes atomically and closes the figure. No global pyplot state:
figures are made with ``matplotlib.figure.Figure``. This package's ``__init__`` imports no
matplotlib: the commands read the default plot paths from it before they decide to plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.plots.figure import save_figure

__all__ = ["ABLATION_PLOT", "ABLATION_TRAINING_PLOT", "MATMUL_PLOT", "PLOTS_DIR", "save_figure"]

PLOTS_DIR = Path("plots")
ABLATION_PLOT = PLOTS_DIR / "ablation.png"
ABLATION_TRAINING_PLOT = PLOTS_DIR / "ablation_training.png"
MATMUL_PLOT = PLOTS_DIR / "matmul_scaling.png"


def __getattr__(name: str) -> Any:
    if name == "save_figure":
        from toolkit.plots.figure import save_figure

        return save_figure
    raise AttributeError(f"module 'toolkit.plots' has no attribute {name!r}")
