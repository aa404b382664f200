"""Saving a figure: matplotlib on its file-only backend, written atomically, then closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.figure import Figure

from toolkit.files import atomic_path


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save ``figure`` as PNG to ``path`` through a temporary file, then close it."""
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format=target.suffix.lstrip(".") or "png")
    figure.clear()
    return target
