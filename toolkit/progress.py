"""How long studies report progress: one callback type, and the callback that ignores it."""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int, str], None]
"""``callback(done, total, description)``, called by long studies as they advance; the CLI connects
it to a Rich progress bar."""


def no_progress(done: int, total: int, description: str) -> None:
    """The progress callback used when none is given."""
