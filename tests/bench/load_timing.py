"""One load timed in a fresh interpreter (the child side of bench_load.py and bench_families.py):
its seconds and the peak growth of the resident set while it ran (the kernel's resettable
high-water mark), with the model's parameter count and bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _high_water_mark() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS needs Linux")


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def timed_load(load: Callable[[], Any]) -> dict[str, float]:
    """Run ``load()`` (imports done before): seconds, peak RSS growth, parameters and their bytes."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    before = _rss()
    start = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - start
    params = list(model.parameters())
    return {
        "seconds": seconds,
        "rss_growth": _high_water_mark() - before,
        "params": sum(p.numel() for p in params),
        "loaded_bytes": sum(p.numel() * p.element_size() for p in params),
    }
