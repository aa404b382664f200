"""The one output layer: a command's result as Rich tables on stdout or one JSON document, then its
notes and warnings on stderr, and the Rich progress bar long studies drive.

Every command builds one :class:`Output`, queues notes and warnings while it works, and ends with
one call to :meth:`Output.finish`. The channel rule is the same for every command: the result on
stdout (tables, or with ``--json`` one JSON object and nothing else), then the notes and warnings
on stderr; with ``--json`` they are also inside the object, as ``"messages"``. Piped to a file,
tables keep their natural width instead of being cut to 80 columns. Library text names the settings
a user can change as quantities (:func:`toolkit.errors.setting`); here they become the flags.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.measure import Measurement

from toolkit.cli.options import FLAGS
from toolkit.errors import OutputError, name_settings
from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import exit_after_signal, graceful, stop_requested

console = Console()
err_console = Console(stderr=True)


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


def flagged(text: str) -> str:
    """Library text with each marked quantity named by its flag (``budget_s`` -> ``--budget``)."""
    return name_settings(text, FLAGS)


UNLIMITED_WIDTH = 10_000
"""Width offered to a renderable printed into a pipe or file: it takes its natural width."""


def print_renderable(target: Console, renderable: RenderableType) -> None:
    """Print on ``target``: wrapped to a terminal's width, or at natural width into a pipe or file."""
    if target.is_terminal:
        target.print(renderable)
        return
    options = target.options.update(width=UNLIMITED_WIDTH)
    natural = Measurement.get(target, options, renderable).maximum
    width = target.width
    target.width = max(width, natural)  # print() clamps to the console's width
    try:
        target.print(renderable)
    finally:
        target.width = width


class Output:
    """One command's output: tables or JSON on stdout, then notes and warnings on stderr."""

    def __init__(self, json: bool = False) -> None:
        self.json = json
        self._messages: list[tuple[str, str]] = []  # (level, text), in the order they were queued
        self._failed_writes: list[str] = []

    @property
    def messages(self) -> list[dict[str, str]]:
        """The queued notes and warnings, as ``--json`` writes them."""
        return [{"level": level, "text": text} for level, text in self._messages]

    def note(self, text: str) -> None:
        """A side remark (a file written, what input was used), printed on stderr after the result."""
        self._messages.append(("note", flagged(text)))

    def warn(self, text: str) -> None:
        """A warning about the result (noisy timings, a busy machine), on stderr after the result."""
        self._messages.append(("warning", flagged(text)))

    def warn_all(self, texts: Iterable[str], shown: int | None = None) -> None:
        """Each warning, or the first ``shown`` and a count of the rest (all of them are in --json)."""
        texts = list(texts)
        for text in texts if shown is None else texts[:shown]:
            self.warn(text)
        if shown is not None and len(texts) > shown:
            self.warn(f"{len(texts) - shown} more timing warnings (noisy machine?); --json lists them all")

    def save(self, what: str, write: Callable[[], Path]) -> Path | None:
        """Run ``write`` (which returns the path it wrote) and note the file; a write that fails even
        though its path was checked before the work is kept for :meth:`finish`, which prints the
        result first and then fails with one line (exit 2)."""
        if stop_requested() is not None:
            self.note(f"{what} not written: the run was interrupted")
            return None
        try:
            path = write()
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            self._failed_writes.append(f"could not write {what}{where}: {exc.strerror or exc}")
            return None
        self.note(f"{what} written to {path}")
        return path

    @contextlib.contextmanager
    def progress(self) -> Iterator[ProgressCallback]:
        """The long work: a Rich progress bar on stderr driven by a study's progress callback (none
        in pipes), under :func:`toolkit.signals.graceful`: a SIGINT / SIGTERM stops the study early
        with what it has, and :meth:`finish` prints that, marked interrupted, then exits 130 / 143."""
        with graceful(), self._bar() as update:
            yield update

    @contextlib.contextmanager
    def _bar(self) -> Iterator[ProgressCallback]:
        if not err_console.is_terminal:
            yield no_progress
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        task = bar.add_task("starting", total=None)

        def update(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, total=total, description=description)

        with bar:
            yield update

    def finish(self, data: dict[str, Any], *renderables: RenderableType) -> None:
        """Print the result (``data`` as JSON with --json, else the tables), then the notes; then fail
        with one line if a file could not be written."""
        signum = stop_requested()
        if signum is not None:
            self.warn(
                f"interrupted by {signal.Signals(signum).name}: these results are partial, only what was "
                "measured before the signal"
            )
        if self.json:
            print_json({**data, "interrupted": signum is not None, "messages": self.messages})
        else:
            for renderable in renderables:
                print_renderable(console, renderable)
        for level, text in self._messages:
            line = text if level == "note" else f"warning: {text}"
            err_console.print(line, highlight=False, markup=False, soft_wrap=not err_console.is_terminal)
        self._messages.clear()
        if self._failed_writes:
            failed, self._failed_writes = self._failed_writes, []
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise OutputError(f"{failed[0]}{more}; the results above are complete, only the file is missing")
        exit_after_signal()  # after a signal: exit 130 / 143 now that the partial results are out
