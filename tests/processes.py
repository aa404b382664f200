"""Running the real console command in a subprocess, as users do, and watching it from /proc."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def toolkit_command() -> list[str]:
    """The console script (as users run it), or ``python -m toolkit`` where it is not installed."""
    script = Path(sys.executable).with_name("toolkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "toolkit"]


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
