"""The same block plans on ``torch.distributed``: how the product grows beyond one machine.

Every rank holds only its blocks. Rank 0 has A and B and sends each rank the blocks of its tasks
(point-to-point); the ranks multiply; then one collective assembles C:

- ``k``: every rank computes a full-size partial product, and ``all_reduce`` (sum) adds them;
- ``rows`` / ``cols`` / ``grid``: every rank computes one block of C, and ``all_gather`` collects the
  blocks (padded to one shape, as the collective needs);
- ``recursive``: every rank adds its leaves into a zero C, and ``all_reduce`` sums them.

Gloo on CPUs, NCCL on GPUs. Two ways to run:

- locally, one rank process per worker, started here, meeting through a file in a temporary
  directory (no ports, no networking); rank 0 takes "run once" / "stop" commands from the parent
  through a pipe, so the parent can interleave its reference timings and kill every rank on Ctrl-C;
- under ``torchrun`` (one process per rank, on one or many machines), where this process is a rank
  and rank 0 drives the others.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit import signals
from toolkit.errors import DeviceError, InputError, MatmulError, WorkerDiedError, setting
from toolkit.matmul import worker
from toolkit.matmul.kernels import KERNELS
from toolkit.matmul.plans import BlockPlan, ProductTask, make_plan
from toolkit.matmul.pool import children_skip_main, prepare_context
from toolkit.matmul.shared import ArraySpec, attach

if TYPE_CHECKING:
    import torch

RUN, STOP = 1, 0
POLL_S = 0.25
START_TIMEOUT_S = 300.0
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
DTYPE_CODES = {"float64": 0, "float32": 1, "int64": 2}
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def in_torchrun() -> bool:
    """True when this process is one rank of a job started by torchrun (or set up like one)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def torchrun_rank() -> tuple[int, int, int]:
    """(rank, world size, ranks on this machine) from torchrun's environment."""
    world = int(os.environ["WORLD_SIZE"])
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_WORLD_SIZE", world))


def backend_for(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def check_device(device: str, world: int, kernel: str, dtype: str, local: bool) -> None:
    """Refuse what cannot run: CUDA without GPUs, more local ranks than GPUs, naive or int64 on GPU."""
    if device != "cuda":
        return
    import torch

    from toolkit.device import resolve_device

    resolve_device("cuda")  # refuses CUDA without a visible GPU
    if local and world > torch.cuda.device_count():
        raise DeviceError(
            f"NCCL needs one GPU per rank: {world} local ranks but {torch.cuda.device_count()} GPU(s); "
            f"lower {setting('workers')} or use {setting('device')} cpu"
        )
    if kernel == "naive":
        raise InputError(
            f"{setting('kernel')} naive is a Python loop and runs on CPUs only; "
            f"use {setting('kernel')} blas on GPUs"
        )
    if dtype == "int64":
        raise InputError("int64 matrix products are not supported on CUDA; use float32/float64 on GPUs")


# --------------------------------------------------------------------------------------------------
# What every rank runs


class RankEngine:
    """One rank's part of the product: its tasks, its blocks, and the collective that assembles C."""

    def __init__(self, rank: int, world: int, plan: BlockPlan, kernel: str, dtype: str, device: torch.device):
        import torch

        self.torch = torch
        self.rank, self.world, self.plan, self.kernel, self.device = rank, world, plan, kernel, device
        self.dtype = getattr(torch, dtype)
        self.tasks: list[ProductTask] = list(self.tasks_of(rank))
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
        n, m = plan.n, plan.m
        if plan.split in ("k", "recursive"):
            self.local = torch.zeros(n, m, dtype=self.dtype, device=device)
        else:
            rows = max((task.rows.size for task in plan.products), default=0)
            cols = max((task.cols.size for task in plan.products), default=0)
            self.local = torch.zeros(rows, cols, dtype=self.dtype, device=device)
            self.gathered = [torch.empty_like(self.local) for _ in range(world)]

    def tasks_of(self, rank: int) -> tuple[ProductTask, ...]:
        """k/rows/cols/grid: task i on rank i (≤ one each); recursive: leaves dealt round-robin."""
        if self.plan.split == "recursive":
            return self.plan.products[rank :: self.world]
        return self.plan.products[rank : rank + 1]

    def scatter(self, a: np.ndarray | None, b: np.ndarray | None) -> float:
        """Rank 0 sends every rank the A and B blocks of its tasks. Returns the seconds it took."""
        torch, dist = self.torch, self._dist()
        dist.barrier()
        begin = time.perf_counter()
        if self.rank == 0:
            assert a is not None
            assert b is not None
            for rank in range(self.world):
                for task in self.tasks_of(rank):
                    a_block = torch.from_numpy(np.ascontiguousarray(a[task.rows.slice, task.inner.slice]))
                    b_block = torch.from_numpy(np.ascontiguousarray(b[task.inner.slice, task.cols.slice]))
                    if rank == 0:
                        self.blocks.append((a_block.to(self.device), b_block.to(self.device)))
                    else:
                        dist.send(a_block.to(self.device), dst=rank)
                        dist.send(b_block.to(self.device), dst=rank)
        else:
            for task in self.tasks:
                a_block = torch.empty(task.rows.size, task.inner.size, dtype=self.dtype, device=self.device)
                b_block = torch.empty(task.inner.size, task.cols.size, dtype=self.dtype, device=self.device)
                dist.recv(a_block, src=0)
                dist.recv(b_block, src=0)
                self.blocks.append((a_block, b_block))
        self._synchronize()
        return time.perf_counter() - begin

    def run_once(self) -> float:
        """Multiply this rank's blocks and take part in the collective; seconds on this rank."""
        dist = self._dist()
        dist.barrier()
        self._synchronize()
        begin = time.perf_counter()
        plan = self.plan
        if plan.split == "k":
            if self.blocks:
                self._multiply(*self.blocks[0], self.local)
            else:
                self.local.zero_()
            dist.all_reduce(self.local, op=dist.ReduceOp.SUM)
        elif plan.split == "recursive":
            self.local.zero_()
            for task, (a_block, b_block) in zip(self.tasks, self.blocks, strict=True):
                self.local[task.rows.slice, task.cols.slice] += self._product(a_block, b_block)
            dist.all_reduce(self.local, op=dist.ReduceOp.SUM)
        else:
            if self.blocks:
                task = self.tasks[0]
                self._multiply(*self.blocks[0], self.local[: task.rows.size, : task.cols.size])
            dist.all_gather(self.gathered, self.local)
        self._synchronize()
        return time.perf_counter() - begin

    def result(self) -> np.ndarray:
        """C, assembled (valid on every rank after :meth:`run_once`)."""
        if self.plan.split in ("k", "recursive"):
            return self.local.cpu().numpy()
        c = np.empty((self.plan.n, self.plan.m), dtype=self.local.cpu().numpy().dtype)
        for rank in range(self.world):
            for task in self.tasks_of(rank):
                block = self.gathered[rank][: task.rows.size, : task.cols.size].cpu().numpy()
                c[task.rows.slice, task.cols.slice] = block
        return c

    def _product(self, a_block: torch.Tensor, b_block: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return a_block @ b_block
        out = self.torch.empty(a_block.shape[0], b_block.shape[1], dtype=self.dtype)
        KERNELS[self.kernel](a_block.numpy(), b_block.numpy(), out.numpy())
        return out

    def _multiply(self, a_block: torch.Tensor, b_block: torch.Tensor, out: torch.Tensor) -> None:
        if self.device.type == "cuda":
            self.torch.matmul(a_block, b_block, out=out)
        else:
            KERNELS[self.kernel](a_block.numpy(), b_block.numpy(), out.numpy())

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def _dist(self) -> Any:
        import torch.distributed as dist

        return dist


def rank_device(device: str, local_rank: int) -> torch.device:
    import torch

    if device == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    worker.initialize_blas(threads)


def serve(engine: RankEngine, next_command: Callable[[], int], after_run: Callable[[float], None]) -> None:
    """The command loop every rank runs: rank 0's command is broadcast, then all run once or stop."""
    torch, dist = engine.torch, engine._dist()
    command = torch.zeros(1, dtype=torch.int64, device=engine.device)
    while True:
        if engine.rank == 0:
            command.fill_(next_command())
        dist.broadcast(command, src=0)
        if int(command.item()) == STOP:
            return
        seconds = engine.run_once()
        after_run(seconds)


# --------------------------------------------------------------------------------------------------
# Local ranks, started and driven by this process


def _local_rank_main(
    rank: int,
    world: int,
    init_file: str,
    specs: tuple[ArraySpec, ArraySpec, ArraySpec],
    split: str,
    kernel: str,
    device: str,
    threads: int,
    parent_pid: int,
    connection: Connection | None,
) -> None:
    """A local rank process: join the group, get blocks, run the command loop (rank 0 reports back)."""
    import torch.distributed as dist

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it kills the ranks
    threading.Thread(
        target=worker.exit_when_orphaned, args=(parent_pid, os.getppid()), name="parent-watch", daemon=True
    ).start()
    limit_threads(threads)
    spec_a, spec_b, spec_c = specs
    n, k = spec_a.shape
    m = spec_b.shape[1]
    dist.init_process_group(
        backend_for(device),
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        engine = RankEngine(
            rank,
            world,
            make_plan(split, n, k, m, world),
            kernel,
            np.dtype(spec_a.dtype).name,
            rank_device(device, rank),
        )
        if rank == 0:
            assert connection is not None
            scatter_s = engine.scatter(attach(spec_a), attach(spec_b))
            connection.send(("ready", scatter_s))
            c = attach(spec_c)

            def report(seconds: float) -> None:
                c[...] = engine.result()
                connection.send(("done", seconds))

            serve(engine, connection.recv, report)
        else:
            engine.scatter(None, None)
            serve(engine, lambda: STOP, lambda seconds: None)
    finally:
        dist.destroy_process_group()


class LocalGroup:
    """``world`` rank processes on this machine, for the study to time like the process pool."""

    def __init__(
        self,
        world: int,
        specs: tuple[ArraySpec, ArraySpec, ArraySpec],
        split: str,
        kernel: str,
        device: str,
        threads: int,
    ) -> None:
        self.world = world
        self.specs = specs
        self.split = split
        self.kernel = kernel
        self.device = device
        self.threads = threads
        self._processes: list[Any] = []
        self._connection: Connection | None = None
        self._directory: str | None = None

    def __enter__(self) -> LocalGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()

    def start(self) -> tuple[float, float]:
        """Start the ranks, form the group and scatter the blocks: (start seconds, scatter seconds)."""
        begin = time.perf_counter()
        context = prepare_context()
        self._directory = tempfile.mkdtemp(prefix="toolkit_mm_rendezvous_")
        init_file = os.path.join(self._directory, "store")
        parent_end, child_end = context.Pipe()
        self._connection = parent_end
        for rank in range(self.world):
            process = context.Process(
                target=_local_rank_main,
                args=(
                    rank,
                    self.world,
                    init_file,
                    self.specs,
                    self.split,
                    self.kernel,
                    self.device,
                    self.threads,
                    os.getpid(),
                    child_end if rank == 0 else None,
                ),
                name=f"toolkit-matmul-rank-{rank}",
                daemon=True,
            )
            with signals.deferred(), children_skip_main():  # a rank we start, we can also kill
                process.start()
                self._processes.append(process)
        child_end.close()
        message, scatter_s = self._receive(START_TIMEOUT_S)
        assert message == "ready"
        return time.perf_counter() - begin - scatter_s, scatter_s

    def run_once(self) -> float:
        assert self._connection is not None
        self._connection.send(RUN)
        message, seconds = self._receive(None)
        assert message == "done"
        return float(seconds)

    def _receive(self, timeout_s: float | None) -> tuple[str, float]:
        """Rank 0's next message, while watching that every rank is still alive."""
        assert self._connection is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._connection.poll(POLL_S):
            dead = [(rank, p.exitcode) for rank, p in enumerate(self._processes) if p.exitcode is not None]
            if dead:
                raise WorkerDiedError(
                    "torch.distributed rank(s) died: "
                    + ", ".join(f"rank {rank} (exit code {code})" for rank, code in dead)
                    + "; see the messages above; the product cannot finish"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise MatmulError(f"the torch.distributed ranks did not start within {timeout_s:.0f} s")
        try:
            message: tuple[str, float] = self._connection.recv()
        except EOFError:
            raise WorkerDiedError(
                "torch.distributed rank 0 closed its pipe (it died); the product cannot finish"
            ) from None
        return message

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._connection.send(STOP)
        for process in self._processes:
            process.join(timeout=10)
        self.kill()

    def kill(self) -> None:
        for process in self._processes:
            if process.exitcode is None:
                process.kill()
        deadline = time.monotonic() + 1.0
        for process in self._processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        self._processes.clear()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
