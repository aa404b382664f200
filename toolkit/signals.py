"""Ending a run cleanly on SIGINT and SIGTERM, even where SIGINT arrived ignored: at once with
cleanup (:func:`interruptible`, the parallel product), or with the results measured so far
(:func:`graceful`, the studies).

A shell starts background jobs (``cmd &`` without job control) with SIGINT ignored, and Python then
installs no KeyboardInterrupt handler: ``kill -INT`` would do nothing while workers and /dev/shm
segments live on. :func:`interruptible` installs handlers for both signals explicitly, for the
duration of a run: SIGINT raises ``KeyboardInterrupt`` (exit 130), SIGTERM raises
:class:`Terminated` (exit 143). The exception unwinds through the pool and the workspace, which
kill the workers and unlink the segments. Further signals during that cleanup are ignored, so a
second Ctrl-C cannot cut it short.

:func:`deferred` marks a short critical section (starting a process: the parent must learn the
child's pid, or it could not kill it); a signal arriving inside is raised at its end.

:func:`graceful` is for studies whose finished parts are worth printing: a signal raises nothing but
sets :func:`stop_requested`, which the timing loops and the studies check between steps to stop
early and return what they have (marked interrupted); the command prints it and leaves with
:func:`exit_after_signal`. A watchdog makes sure the process ends within :data:`GRACE_S` seconds
of the signal even if a step takes longer (a second signal ends it at once).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import NoReturn

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during :func:`interruptible`."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


GRACE_S = 1.8
"""After a signal, the most a graceful run takes to print its partial results and exit."""


class _State:
    installed = False  # our handlers are in place
    requested: int | None = None  # graceful(): the signal that asked the run to stop
    raised = False  # a signal has been turned into an exception; later ones are ignored
    deferring = 0  # depth of deferred() sections
    pending: int | None = None  # a signal that arrived inside a deferred() section


def _raise_for(signum: int) -> None:
    _State.raised = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _State.raised:  # cleanup is under way: let it finish
        return
    if _State.deferring:
        _State.pending = _State.pending or signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT → KeyboardInterrupt, SIGTERM → :class:`Terminated`, once; handlers restored afterwards.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    with _handlers(_on_signal) as installed:
        if installed:
            _State.raised, _State.pending = False, None
        yield


@contextlib.contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[bool]:
    """``handler`` for SIGINT and SIGTERM while the block runs, the previous ones restored after;
    yields whether it installed them. Outside the main thread (where Python cannot install
    handlers), or inside another such block, it does nothing (and yields False)."""
    if threading.current_thread() is not threading.main_thread() or _State.installed:
        yield False
        return
    previous = {signum: signal.signal(signum, handler) for signum in HANDLED}
    _State.installed = True
    try:
        yield True
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        _State.installed = False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back a SIGINT/SIGTERM that arrives inside (only while :func:`interruptible` is active)."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1
        if not _State.deferring and _State.pending is not None and not _State.raised:
            signum, _State.pending = _State.pending, None
            _raise_for(signum)


def stop_requested() -> int | None:
    """The signal (SIGINT or SIGTERM) that asked a :func:`graceful` run to stop, or None."""
    return _State.requested


def exit_code(signum: int) -> int:
    """The shell's convention for death by a signal: 128 + the signal number (130, 143)."""
    return 128 + signum


def exit_now(code: int, what: str) -> NoReturn:
    """Leave at once with ``code`` after one line on stderr, without the interpreter's teardown
    (PyTorch's can take seconds on a busy machine)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(f"toolkit: {what}\n")
        sys.stderr.flush()
    os._exit(code)


def exit_after_signal() -> None:
    """If a :func:`graceful` run was stopped by a signal, leave now with 130 / 143 (else return)."""
    signum = _State.requested
    if signum is not None:
        exit_now(
            exit_code(signum), f"interrupted by {signal.Signals(signum).name}; the results above are partial"
        )


def _watchdog(signum: int) -> None:
    time.sleep(GRACE_S)
    exit_now(exit_code(signum), f"interrupted by {signal.Signals(signum).name}; stopped before the results")


def _on_graceful_signal(signum: int, frame: FrameType | None) -> None:
    if _State.requested is not None:  # a second signal: leave at once
        exit_now(exit_code(signum), f"interrupted by {signal.Signals(signum).name} again")
    _State.requested = signum
    threading.Thread(target=_watchdog, args=(signum,), daemon=True, name="toolkit-watchdog").start()


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """SIGINT / SIGTERM ask the run to stop (:func:`stop_requested`) instead of raising; handlers
    restored afterwards. Outside the main thread, or inside another handler scope, it does nothing."""
    with _handlers(_on_graceful_signal) as installed:
        if installed:
            _State.requested = None
        yield
