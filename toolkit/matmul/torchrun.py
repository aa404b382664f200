"""torch.distributed under torchrun: this process is one rank of a job torchrun started.

Rank 0 (the leader) holds the inputs and shares a header of shapes and dtype; the other ranks
(followers) serve commands until the leader is done.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np

from toolkit.matmul.distributed import (
    COLLECTIVE_TIMEOUT,
    DTYPE_CODES,
    RUN,
    STOP,
    RankEngine,
    backend_for,
    limit_threads,
    rank_device,
    serve,
    torchrun_rank,
)
from toolkit.matmul.plans import make_plan
from toolkit.matmul.pool import available_cores

if TYPE_CHECKING:
    import torch


# --------------------------------------------------------------------------------------------------
# Under torchrun: this process is a rank


def init_torchrun(device: str) -> tuple[int, int, int, torch.device]:
    """Join torchrun's group: (rank, world, local world, device)."""
    import torch.distributed as dist

    rank, world, local_world = torchrun_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch_device = rank_device(device, local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    return rank, world, local_world, torch_device


def share_header(
    rank: int, device: torch.device, shape: tuple[int, int, int] | None, dtype: str | None
) -> tuple[int, int, int, str]:
    """Rank 0 tells every rank n, k, m and the dtype (only rank 0 has the inputs)."""
    import torch
    import torch.distributed as dist

    header = torch.zeros(4, dtype=torch.int64, device=device)
    if rank == 0:
        assert shape is not None
        assert dtype is not None
        header.copy_(torch.tensor([*shape, DTYPE_CODES[dtype]]))
    dist.broadcast(header, src=0)
    n, k, m, code = (int(value) for value in header.tolist())
    return n, k, m, {value: key for key, value in DTYPE_CODES.items()}[code]


def run_follower(split: str, kernel: str, device: str) -> None:
    """A torchrun rank other than 0: get the header and the blocks, run until rank 0 says stop."""
    import torch.distributed as dist

    rank, world, local_world, torch_device = init_torchrun(device)
    from toolkit.matmul.pool import available_cores

    limit_threads(max(1, available_cores() // local_world))
    try:
        n, k, m, dtype = share_header(rank, torch_device, None, None)
        engine = RankEngine(rank, world, make_plan(split, n, k, m, world), kernel, dtype, torch_device)
        engine.scatter(None, None)
        serve(engine, lambda: STOP, lambda seconds: None)
    finally:
        dist.destroy_process_group()


class TorchrunLeader:
    """Rank 0 under torchrun, driven by the study like :class:`LocalGroup` (this process is the rank)."""

    def __init__(
        self, a: np.ndarray, b: np.ndarray, c: np.ndarray, split: str, kernel: str, device: str
    ) -> None:
        self.a, self.b, self.c, self.split, self.kernel, self.device = a, b, c, split, kernel, device
        self.engine: RankEngine | None = None
        self.world = 0
        self.threads = 1

    def __enter__(self) -> TorchrunLeader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        import torch.distributed as dist

        try:
            if self.engine is not None:  # release the followers, also after an error here
                serve(self.engine, lambda: STOP, lambda seconds: None)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    def start(self) -> tuple[float, float]:
        begin = time.perf_counter()
        rank, world, local_world, torch_device = init_torchrun(self.device)
        self.world, self.threads = world, max(1, available_cores() // local_world)
        limit_threads(self.threads)
        n, k = self.a.shape
        m = self.b.shape[1]
        share_header(rank, torch_device, (n, k, m), self.a.dtype.name)
        self.engine = RankEngine(
            rank, world, make_plan(self.split, n, k, m, world), self.kernel, self.a.dtype.name, torch_device
        )
        start_s = time.perf_counter() - begin
        return start_s, self.engine.scatter(self.a, self.b)

    def run_once(self) -> float:
        """Tell the followers to run once, run this rank's part, and put C where the study reads it."""
        assert self.engine is not None
        engine = self.engine
        command = engine.torch.full((1,), RUN, dtype=engine.torch.int64, device=engine.device)
        engine._dist().broadcast(command, src=0)
        elapsed = engine.run_once()
        self.c[...] = engine.result()
        return elapsed
