"""Loads timed in fresh interpreters, for bench_load.py and bench_families.py: the child side
(:func:`timed_load`: seconds, and the peak growth of the resident set while it ran, from the kernel's
resettable high-water mark) and the parent side (:func:`compare_loads`: toolkit and transformers in
alternating order, then the medians and the targets)."""

from __future__ import annotations

import statistics
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


def compare_loads(load_in_child: Callable[[str], dict[str, float]], rounds: int) -> None:
    """Load with ``toolkit`` and ``transformers`` alternately (each ``load_in_child(which)`` a fresh
    interpreter running :func:`timed_load`), then print each one's median time and peak RSS growth
    against its loaded weights, and the targets: load time ≤ 1.0× and toolkit's growth ≤ 1.3×."""
    results: dict[str, list[dict[str, float]]] = {"toolkit": [], "transformers": []}
    for index in range(rounds):
        for which in ("toolkit", "transformers") if index % 2 == 0 else ("transformers", "toolkit"):
            results[which].append(load_in_child(which))
    medians = {}
    for which, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        q1, _, q3 = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else (seconds[0],) * 3
        medians[which] = statistics.median(seconds)
        growth = statistics.median(r["rss_growth"] for r in runs)
        loaded = runs[0]["loaded_bytes"]
        print(
            f"  {which:<13} load {medians[which] * 1e3:7.0f} ms (IQR {q1 * 1e3:.0f}–{q3 * 1e3:.0f})  "
            f"peak RSS growth {growth / 1e6:6.0f} MB = {growth / loaded:.2f}× its loaded weights "
            f"({loaded / 1e6:.0f} MB)"
        )
    ratio = medians["toolkit"] / medians["transformers"]
    toolkit = results["toolkit"]
    growth = statistics.median(r["rss_growth"] for r in toolkit) / toolkit[0]["loaded_bytes"]
    verdict = {True: "MET", False: "NOT MET"}
    print(f"  load time ratio toolkit / transformers: {ratio:.2f}× (target ≤ 1.00×: {verdict[ratio <= 1]})")
    print(
        f"  toolkit peak RSS growth / loaded weights: {growth:.2f}× "
        f"(target ≤ 1.30×: {verdict[growth <= 1.3]})"
    )
