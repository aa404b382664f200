"""Ending a run cleanly on SIGINT and SIGTERM, even where SIGINT arrived ignored.

A shell starts background jobs (``cmd &`` without job control) with SIGINT ignored, and Python then
installs no KeyboardInterrupt handler: ``kill -INT`` would do nothing while workers and /dev/shm
segments live on. :func:`interruptible` installs handlers for both signals explicitly, for the
duration of a run: SIGINT raises ``KeyboardInterrupt`` (exit 130), SIGTERM raises
:class:`Terminated` (exit 143). The exception unwinds through the pool and the workspace, which
kill the workers and unlink the segments. Further signals during that cleanup are ignored, so a
second Ctrl-C cannot cut it short.

:func:`deferred` marks a short critical section (starting a process: the parent must learn the
child's pid, or it could not kill it); a signal arriving inside is raised at its end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during :func:`interruptible`."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by a signal: 128 + the signal number."""
        return 128 + self.signum


class _State:
    installed = False  # our handlers are in place
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
    if threading.current_thread() is not threading.main_thread() or _State.installed:
        yield
        return
    previous = {signum: signal.signal(signum, _on_signal) for signum in HANDLED}
    _State.installed, _State.raised, _State.pending = True, False, None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
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
