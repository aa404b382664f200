"""The machine timings run on: the allocator (so repeated calls stop paying page faults), the load of
other processes while timing, and the context a measurement is taken in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import resource
import sys
import time
from typing import Any

import torch

from toolkit.device import device_name
from toolkit.timing.stats import TimingContext

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: ~2 GiB of free heap is kept before trimming

_allocator_description: str | None = None


def configure_allocator() -> str:
    """Keep freed memory inside the process so repeated calls stop paying minor page faults.

    On glibc: ``M_MMAP_MAX=0`` (large blocks come from the heap, not from fresh mmaps that are
    unmapped on free) and ``M_TRIM_THRESHOLD`` ~2 GiB (the heap is not trimmed back to the OS). The
    same settings go into ``MALLOC_*`` environment variables so child processes inherit them
    (variables the user set are left alone). Idempotent; returns a one-line description.
    """
    global _allocator_description
    if _allocator_description is not None:
        return _allocator_description
    preload = os.environ.get("LD_PRELOAD", "")
    libc = _glibc()
    if libc is None:
        _allocator_description = f"system allocator unchanged (no glibc on {platform.system()})"
    elif any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        _allocator_description = f"allocator unchanged (LD_PRELOAD={preload})"
    else:
        version = libc.gnu_get_libc_version()
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
        os.environ.setdefault("MALLOC_MMAP_MAX_", "0")
        os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(_TRIM_THRESHOLD_BYTES))
        glibc = f"glibc {version.decode() if isinstance(version, bytes) else version}"
        _allocator_description = (
            f"{glibc} malloc: no mmap for large blocks, heap kept (trim threshold 2 GiB)"
            if ok
            else f"{glibc} malloc: mallopt refused the settings; allocator unchanged"
        )
    return _allocator_description


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError):
        return None  # musl or another libc without mallopt's glibc semantics
    return libc


def capture_context(
    device: torch.device,
    dtype: torch.dtype | str,
    batch: int | None = None,
    seq_len: int | None = None,
    **extras: Any,
) -> TimingContext:
    """The context of a measurement about to be taken on ``device`` in this process."""
    return TimingContext(
        device_name=device_name(device),
        dtype=str(dtype).removeprefix("torch."),
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        batch=batch,
        seq_len=seq_len,
        allocator=configure_allocator(),
        extras=dict(extras),
    )


class MachineLoad:
    """CPU time that other processes used while we were timing (from /proc/stat, else the load average)."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = os.cpu_count() or 1
        self.start()

    @staticmethod
    def _busy_jiffies() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [float(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
        return sum(fields[:8]) - fields[3] - fields[4]

    def start(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._wall = time.perf_counter()
        self._self_cpu = usage.ru_utime + usage.ru_stime
        self._busy = self._busy_jiffies()

    def others_share(self) -> float:
        """Share of all CPUs that other processes kept busy since start() (NaN when unknown)."""
        wall = time.perf_counter() - self._wall
        busy = self._busy_jiffies()
        if busy is None or self._busy is None or wall <= 0:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
            return max(0.0, load - torch.get_num_threads()) / self._cpus
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self_cpu = usage.ru_utime + usage.ru_stime - self._self_cpu
        others = (busy - self._busy) / self._tick - self_cpu
        return max(0.0, others / (wall * self._cpus))
