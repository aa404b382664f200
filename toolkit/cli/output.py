"""The one output layer: Rich tables on stdout, or JSON for scripts, and a Rich progress bar."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True)

ProgressCallback = Callable[[int, int, str], None]
"""``callback(done, total, description)``, called by long studies as they advance."""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # NumPy and torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write null for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_finite(data), indent=2, default=_json_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def show(*renderables: RenderableType) -> None:
    for renderable in renderables:
        console.print(renderable)


def note(message: str) -> None:
    """A side remark (where a file was written, a warning): on stderr, so --json stays clean."""
    err_console.print(message, highlight=False)


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressCallback]:
    """A Rich progress bar on stderr, driven by a study's progress callback."""
    if not enabled:
        yield lambda done, total, description: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # no bar (and no stray blank line) in pipes and CI logs
    )
    task = progress.add_task("starting", total=None)

    def update(done: int, total: int, description: str) -> None:
        progress.update(task, completed=done, total=total, description=description)

    with progress:
        yield update
