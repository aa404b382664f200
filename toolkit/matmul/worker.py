"""What runs inside a pool worker: set-up, and the tasks (a product block, a reduce stripe, references).

Every task maps the shared arrays by name (:mod:`toolkit.matmul.shared`) and writes its result into
them; only names, index ranges and a few floats cross the process boundary.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from toolkit.matmul.kernels import KERNELS
from toolkit.matmul.plans import ProductTask, Span, run_product, run_reduce
from toolkit.matmul.shared import WorkspaceSpecs, map_workspace

WATCH_INTERVAL_S = 0.2

_controller: ThreadpoolController | None = None


def initialize(blas_threads: int, parent_pid: int) -> None:
    """Pool initializer: ignore Ctrl-C, limit BLAS threads, and exit if the parent goes away.

    Ctrl-C in a terminal reaches the whole process group; the parent alone decides what happens
    (it kills the workers and cleans up), so workers ignore SIGINT. SIGTERM keeps its default
    action: the parent uses it (or SIGKILL) to end a worker at once, even inside a BLAS call.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initialize_blas(blas_threads)
    watcher = threading.Thread(
        target=exit_when_orphaned, args=(parent_pid, os.getppid()), name="parent-watch", daemon=True
    )
    watcher.start()


def initialize_blas(threads: int) -> None:
    """Limit this process's BLAS to ``threads`` threads (and keep the controller for later changes)."""
    global _controller
    _controller = ThreadpoolController()
    _controller.limit(limits=threads, user_api="blas")


def exit_when_orphaned(parent_pid: int, spawner_pid: int) -> None:
    """A worker whose parent died without cleaning up (SIGKILL) must not live on, blocked on its queue."""
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != spawner_pid or not _alive(parent_pid):
            os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ready(delay_s: float) -> int:
    """Warm-up task: proves the worker runs; the delay keeps it busy so each warm-up lands on a new one."""
    time.sleep(delay_s)
    return os.getpid()


def product(specs: WorkspaceSpecs, task: ProductTask, kernel: str) -> None:
    arrays = map_workspace(specs)
    run_product(task, arrays.a, arrays.b, arrays.c, arrays.partials, KERNELS[kernel])


def reduce(specs: WorkspaceSpecs, stripe: Span) -> None:
    arrays = map_workspace(specs)
    assert arrays.partials is not None, "a reduce task needs the partial buffers"
    run_reduce(stripe, arrays.c, arrays.partials)


def plain_product(specs: WorkspaceSpecs, kernel: str, blas_threads: int, into: str) -> float:
    """One non-parallel product A @ B into ``into`` ("reference" or "scratch"); returns its seconds.

    With ``blas_threads`` = the number of cores this is NumPy's own multi-threaded matmul; with 1 it
    is the single-process, single-thread reference.
    """
    arrays = map_workspace(specs)
    out = arrays.reference if into == "reference" else arrays.scratch
    assert _controller is not None, "worker not initialized"
    with _controller.limit(limits=blas_threads, user_api="blas"):
        start = time.perf_counter()
        KERNELS[kernel](arrays.a, arrays.b, out)
        return time.perf_counter() - start


def absolute_product(specs: WorkspaceSpecs, blas_threads: int) -> None:
    """|A| @ |B| in float64, the scale of the rounding bound (float inputs only)."""
    arrays = map_workspace(specs)
    assert arrays.absolute is not None
    assert _controller is not None
    with _controller.limit(limits=blas_threads, user_api="blas"):
        np.matmul(np.abs(arrays.a, dtype=np.float64), np.abs(arrays.b, dtype=np.float64), out=arrays.absolute)
