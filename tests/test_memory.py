"""How memory is measured: RSS peaks, live tensor bytes, bytes saved for backward."""

from __future__ import annotations

import mmap

import torch

from toolkit import memory
from toolkit.memory import peak_rss_during, rss_bytes

CPU = torch.device("cpu")


def test_peak_rss_sees_a_temporary_allocation() -> None:
    """The forward-peak probe sees 64 MiB of fresh pages touched and released inside the measured call."""
    size = 64 * 2**20

    def touch() -> None:
        with mmap.mmap(-1, size) as pages:  # fresh pages from the kernel, never reused heap memory
            for offset in range(0, size, mmap.PAGESIZE):
                pages[offset] = 1

    before = rss_bytes()
    peak, _method = peak_rss_during(touch)
    assert peak - before >= 60 * 2**20


def test_saved_tensor_bytes_counts_distinct_storages() -> None:
    """x * x saves x twice (one storage): its bytes once; exclude removes the input's share."""
    x = torch.randn(100, 10, requires_grad=True)
    total, beyond = memory.saved_tensor_bytes(lambda: x * x, exclude=(x,))
    assert total == 100 * 10 * 4
    assert beyond == 0
    total, beyond = memory.saved_tensor_bytes(lambda: (x * 2).exp(), exclude=(x,))
    assert total == beyond == 100 * 10 * 4  # exp saves its output


def test_peak_memory_counts_new_storages_not_views() -> None:
    """A 4 MB tensor made inside counts; views and in-place results of old tensors do not."""
    old = torch.zeros(1_000_000)
    with memory.peak_memory(CPU) as peak:
        view = old.view(1000, 1000).T
        old.add_(1.0)
        new = torch.ones(1_000_000)
        del new
        again = torch.ones(500_000)
    assert peak() == 4_000_000
    del view, again
