"""Saving a figure: matplotlib on its file-only backend, written atomically, then closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure

from toolkit.files import atomic_path


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save ``figure`` as PNG to ``path`` through a temporary file, then close it."""
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format=target.suffix.lstrip(".") or "png")
    figure.clear()
    return target


TICK_GAP_PX = 6
"""The least gap kept between two tick labels."""


def renderer_of(figure: Figure) -> RendererAgg:
    """The Agg renderer of ``figure`` (giving it an Agg canvas first if it has none), which
    measures where each text lands."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    return canvas.get_renderer()  # type: ignore[no-untyped-call]


def drop_overlapping_tick_labels(figure: Figure) -> None:
    """Hide each tick label that would overlap the last one kept on its axis (close values on a log
    axis, such as 1,024 and 1,280): the points stay, only their labels go."""
    renderer = renderer_of(figure)
    figure.draw_without_rendering()
    for ax in figure.axes:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            kept = None
            for label in sorted(labels, key=lambda t: t.get_position()):
                if not label.get_visible() or not label.get_text():
                    continue
                box = label.get_window_extent(renderer)
                if kept is not None and box.overlaps(kept.padded(TICK_GAP_PX)):
                    label.set_visible(False)
                else:
                    kept = box
