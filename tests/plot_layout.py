"""Reading a rendered figure back: which texts matplotlib really drew, and where (its renderer's
extents), so that the plot tests can check labels and that no two texts overlap."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

TOLERANCE_PX = 1.0  # antialiasing: boxes that touch by a pixel do not count as overlapping


@contextmanager
def _recording(drawn: list[Text]) -> Iterator[None]:
    original = Text.draw

    def draw(self: Text, renderer: object) -> None:
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        original(self, renderer)  # type: ignore[arg-type]

    Text.draw = draw  # type: ignore[method-assign]
    try:
        yield
    finally:
        Text.draw = original  # type: ignore[method-assign]


def drawn_texts(figure: Figure) -> list[tuple[str, Bbox]]:
    """Every non-empty text drawn when the figure is rendered, with its box in pixels."""
    canvas = FigureCanvasAgg(figure)
    drawn: list[Text] = []
    with _recording(drawn):
        canvas.draw()
    renderer = canvas.get_renderer()
    return [(text.get_text(), text.get_window_extent(renderer)) for text in drawn]


def overlapping_texts(figure: Figure) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes overlap by more than the tolerance."""
    boxes = [(text, box.padded(-TOLERANCE_PX)) for text, box in drawn_texts(figure)]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def assert_readable(figure: Figure) -> None:
    """Every visible axes has both axis labels, and no two drawn texts overlap."""
    for ax in figure.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel().strip(), f"axes {ax.get_title()!r} has no x label"
        assert ax.get_ylabel().strip(), f"axes {ax.get_title()!r} has no y label"
    assert overlapping_texts(figure) == []
