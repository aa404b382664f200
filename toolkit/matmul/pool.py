"""The persistent process pool: started once with an explicit start method, killed on the way out.

``concurrent.futures.ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: when a worker dies
the executor notices at once and fails every pending future (``BrokenProcessPool``), where
``multiprocessing.Pool`` waits forever. That is turned into :class:`WorkerDiedError`, naming the
worker and how it died.

Start method: ``forkserver`` where the platform has it (``spawn`` otherwise), never ``fork``: the
parent has threads (the executor's own, a progress bar, PyTorch's), and forking a threaded process
can deadlock a child. The fork server preloads the worker module, so the imports happen once, in
the server, and every worker starts as a cheap fork of it. Children are started without re-running
the parent's main script (see :func:`children_skip_main`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from toolkit import signals
from toolkit.errors import WorkerDiedError, setting
from toolkit.matmul import worker
from toolkit.matmul.plans import BlockPlan
from toolkit.matmul.shared import WorkspaceSpecs

START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
WARMUP_TASK_S = 0.05
POLL_S = 0.25
MANAGER_JOIN_S = 5.0


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask), which is what the workers share."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def blas_threads_per_worker(workers: int, cores: int | None = None) -> int:
    """cores ÷ workers, at least 1: the workers together use every core and no more."""
    return max(1, (cores or available_cores()) // workers)


PRELOAD = ["toolkit.matmul.worker", "toolkit.matmul.distributed"]


def prepare_context(start_method: str = START_METHOD) -> Any:
    """The multiprocessing context, with the fork server (if used) running and preloaded."""
    context: Any = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(PRELOAD)  # takes effect when the server starts
        # A first, trivial child waits until the server has imported everything (seconds, the first
        # time). It is interruptible; were it cut short, the child would just exit. After this,
        # starting a worker takes milliseconds and can be a critical section (signals.deferred).
        with children_skip_main():
            probe = context.Process(target=worker.ready, args=(0.0,), name="toolkit-forkserver-probe")
            probe.start()
        probe.join()
    return context


@contextlib.contextmanager
def children_skip_main() -> Iterator[None]:
    """Start child processes without making each of them re-run the parent's main script.

    forkserver and spawn children execute the parent's ``__main__`` file again (as
    ``__mp_main__``), in case a task function lives there; for the ``toolkit`` console script that
    means importing the whole CLI, PyTorch included, in every worker, seconds each. Our task
    functions all live in :mod:`toolkit.matmul.worker`, so while processes start here the main
    module's ``__file__`` is hidden and multiprocessing sends no main path. (``python -m`` mains
    are skipped by multiprocessing already.)
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or "__file__" not in vars(main):
        yield
        return
    path = vars(main).pop("__file__")
    try:
        yield
    finally:
        main.__file__ = path


class MatmulPool:
    """``workers`` worker processes, each limited to ``blas_threads`` BLAS threads.

    Use as a context manager; :meth:`start` starts every worker and returns the seconds it took. On
    a normal exit the workers are shut down; on an exception (an error, Ctrl-C, SIGTERM) they are
    killed at once, even inside a BLAS call, so the caller can clean up and exit within a second.
    """

    def __init__(self, workers: int, blas_threads: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.blas_threads = blas_threads
        self.start_method = START_METHOD
        self._executor: cf.ProcessPoolExecutor | None = None
        self._processes: dict[int, Any] = {}

    def __enter__(self) -> MatmulPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()

    @property
    def pids(self) -> list[int]:
        return sorted(self._processes)

    def start(self) -> float:
        """Start every worker now (not lazily at the first product); returns the seconds taken."""
        begin = time.perf_counter()
        context = prepare_context(self.start_method)
        self._executor = cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=worker.initialize,
            initargs=(self.blas_threads, os.getpid()),
        )
        # The executor starts a process per submitted task until it has max_workers; each warm-up
        # task stays busy for a moment so that none is reused before all have started. Starting
        # a process is a critical section: a signal there is raised once the pid is recorded.
        pids: set[int] = set()
        for _ in range(10):
            with signals.deferred(), children_skip_main():
                futures = self._submit(worker.ready, [(WARMUP_TASK_S,)] * self.workers)
            pids.update(self._wait(futures))
            if len(pids) >= self.workers:
                break
        self._processes = dict(getattr(self._executor, "_processes", None) or dict.fromkeys(pids))
        return time.perf_counter() - begin

    def map(self, function: Callable[..., Any], arguments: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``function(*args)`` for every tuple on the pool; the results in order.

        Waits in short slices so that signal handlers run promptly; the first failure cancels the
        rest. A dead worker becomes :class:`WorkerDiedError`.
        """
        return self._wait(self._submit(function, arguments))

    def _submit(
        self, function: Callable[..., Any], arguments: Sequence[tuple[Any, ...]]
    ) -> list[cf.Future[Any]]:
        if self._executor is None:
            raise RuntimeError("the pool is not started")
        try:
            return [self._executor.submit(function, *args) for args in arguments]
        except BrokenProcessPool as exc:
            raise self._died() from exc

    def _wait(self, futures: list[cf.Future[Any]]) -> list[Any]:
        try:
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=POLL_S, return_when=cf.FIRST_EXCEPTION)
                for future in done:
                    future.result()  # raises the task's exception here
            return [future.result() for future in futures]
        except BrokenProcessPool as exc:
            raise self._died() from exc
        finally:
            for future in futures:
                future.cancel()

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return self.map(function, [args])[0]

    def run_plan(self, specs: WorkspaceSpecs, plan: BlockPlan, kernel: str) -> float:
        """One parallel product: every product task, then every reduce stripe. Returns seconds."""
        # Largest tasks first, so that uneven leaves (recursive split) balance across workers.
        tasks = sorted(plan.products, key=lambda task: -task.multiply_adds)
        begin = time.perf_counter()
        self.map(worker.product, [(specs, task, kernel) for task in tasks])
        if plan.reduce_stripes:
            self.map(worker.reduce, [(specs, stripe) for stripe in plan.reduce_stripes])
        return time.perf_counter() - begin

    def _died(self) -> WorkerDiedError:
        """Name the worker that died first and how; the executor has already stopped the others.

        The executor's manager thread is still stopping the other workers and reading their exit
        statuses when the futures fail. Under forkserver a status can be read only once (a second,
        concurrent reader gets 255), so wait for that thread before asking for exit codes.
        """
        manager = getattr(self._executor, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(timeout=MANAGER_JOIN_S)
        dead = []
        for pid, process in self._processes.items():
            code = getattr(process, "exitcode", None)
            if code is not None and code != -signal.SIGTERM:  # SIGTERM: stopped by the executor
                dead.append(f"pid {pid} {_describe_exit(code)}")
        who = "; ".join(dead) if dead else "a worker process died"
        return WorkerDiedError(
            f"matmul worker died ({who}): the product cannot finish and no result is reported; "
            f"if it was out of memory, use smaller matrices or fewer {setting('workers')}"
        )

    def close(self) -> None:
        """Shut the workers down normally (they finish their current task, then exit)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def kill(self) -> None:
        """Kill every worker now (SIGKILL: even a worker deep in BLAS goes at once).

        Then the executor is shut down and dropped, so that its queues' semaphores are unlinked
        now rather than by the resource tracker after the process exits.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = dict(self._processes)
        processes.update(getattr(executor, "_processes", None) or {})
        for pid, process in processes.items():
            try:
                if process is not None:
                    process.kill()
                else:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, OSError, ValueError):
                pass
        executor.shutdown(wait=True, cancel_futures=True)  # quick: the manager sees dead workers
        del executor, processes
        self._processes.clear()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"
