"""Converting a checkpoint's tensors to the requested dtype without holding the file in memory besides.

A safetensors file is memory-mapped: its tensors are views of the file, and every page a conversion
reads stays resident in the process until the mapping goes away. Converting a bfloat16 file into
float32 one tensor after another would therefore end up holding the whole file *and* the float32 model
(1.5× the loaded weights). :func:`convert_state` drops each source tensor's pages right after its copy
is made (``madvise(MADV_DONTNEED)``: the kernel reads them back from the file if they are touched again,
so no data can be lost as long as nobody wrote into the mapping, which the loader never does). Linux
only; elsewhere the conversion is the same and nothing is released.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import functools
import mmap
import sys
from collections.abc import Iterable
from typing import Any

import torch

_MADV_DONTNEED = 4  # <sys/mman.h>, Linux

FileRanges = list[tuple[int, int]]  # sorted (start, end) addresses of file-backed mappings


def file_backed_ranges() -> FileRanges:
    """The address ranges of this process's mappings of files (from ``/proc/self/maps``): anonymous
    memory, the heap and the stack are left out. Empty where there is no such file."""
    if not sys.platform.startswith("linux"):
        return []
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)  # address perms offset device inode [path]
                if len(fields) < 6 or fields[4] == "0" or not fields[5].startswith("/"):
                    continue
                start, end = (int(address, 16) for address in fields[0].split("-"))
                ranges.append((start, end))
    except OSError:
        return []
    return sorted(ranges)


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _byte_span(tensor: torch.Tensor) -> tuple[int, int]:
    """[first, end) addresses of the bytes a (strided, non-negative strides) tensor can touch."""
    begin = tensor.data_ptr()
    reach = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True))
    return begin, begin + (reach + 1) * tensor.element_size()


def release_pages(tensors: Iterable[torch.Tensor], ranges: FileRanges) -> int:
    """Drop from the resident set the whole pages of each CPU tensor that lie inside one of the file
    mappings ``ranges``; the bytes released. Only for tensors that nobody wrote into since they were
    read (a private mapping's written pages would go back to the file's contents)."""
    libc = _libc() if ranges else None
    if libc is None:
        return 0
    page = mmap.PAGESIZE
    released = 0
    for tensor in tensors:
        if tensor.device.type != "cpu" or tensor.numel() == 0 or min(tensor.stride(), default=0) < 0:
            continue
        begin, end = _byte_span(tensor)
        low, high = -(-begin // page) * page, end // page * page  # whole pages inside the tensor
        index = bisect.bisect_right(ranges, low, key=lambda mapping: mapping[0]) - 1
        if high <= low or index < 0 or high > ranges[index][1]:
            continue  # shorter than a page, or not (all) in one file mapping
        if libc.madvise(low, high - low, _MADV_DONTNEED) == 0:
            released += high - low
    return released


def converted(tensor: torch.Tensor, dtype: torch.dtype, ranges: FileRanges) -> torch.Tensor:
    """``tensor`` in ``dtype`` (itself where it already is); a source copied out of one of the file
    mappings ``ranges`` has its pages released right after its copy is made."""
    result = tensor.to(dtype)
    if result.data_ptr() != tensor.data_ptr():
        release_pages([tensor], ranges)
    return result


def convert_state(
    state: dict[str, torch.Tensor], dtype: torch.dtype, ranges: FileRanges | None = None
) -> dict[str, torch.Tensor]:
    """Each tensor of ``state`` :func:`converted` to ``dtype``, one at a time (``ranges``: the file
    mappings, read from ``/proc`` when not given)."""
    ranges = file_backed_ranges() if ranges is None else ranges
    return {key: converted(tensor, dtype, ranges) for key, tensor in state.items()}
