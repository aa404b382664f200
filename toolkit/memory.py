"""How anything's memory is measured: resident set size and its peak, CUDA peaks, live tensor bytes,
and the bytes autograd keeps for the backward pass.

- :func:`rss_bytes` and :func:`peak_rss_during`: the process's resident set now, and its peak while a
  callable runs (the kernel's resettable high-water mark, else RSS sampled every millisecond).
- :func:`cuda_peak_during`: ``torch.cuda.max_memory_allocated`` around a callable.
- :func:`peak_memory`: peak bytes allocated inside a block, on any device (CUDA statistics, or live
  tensor storages tracked per op on the CPU, which is deterministic).
- :func:`saved_tensor_bytes`: distinct storages saved for backward, seen through saved-tensor hooks.
- :func:`check_fits`: admission before any work: the bytes a model and its forward pass need (an
  estimate from the config) against what the device has available (RAM, or free CUDA memory).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from toolkit.config import ModelConfig
from toolkit.device import synchronize
from toolkit.errors import InsufficientMemoryError, setting

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --------------------------------------------------------------------------------------------------
# The process: resident set size


def rss_bytes() -> int:
    """This process's resident set size now, in bytes (Linux /proc; 0 where unavailable)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * _PAGE_SIZE


def _high_water_mark() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def peak_rss_during(fn: Callable[[], object]) -> tuple[int, str]:
    """Peak RSS (bytes) while ``fn`` runs, and how it was measured."""
    try:  # writing 5 resets the kernel's peak-RSS counter (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        reset = _high_water_mark() is not None
    except OSError:
        reset = False
    if reset:
        fn()
        peak = _high_water_mark()
        if peak is not None:
            return peak, "kernel's peak-RSS counter"
    return _sampled_peak(fn), "RSS sampled every 1 ms"


def _sampled_peak(fn: Callable[[], object]) -> int:
    peak = rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.001):
            peak = max(peak, rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak, rss_bytes())


# --------------------------------------------------------------------------------------------------
# Tensors: CUDA peaks and live storages


def cuda_peak_during(fn: Callable[[], object], device: torch.device) -> tuple[int, int]:
    """(bytes allocated when ``fn`` starts, peak bytes allocated while it runs) on a CUDA ``device``."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return start, torch.cuda.max_memory_allocated(device)


class LiveTensorBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts bytes of tensor storages created under it while they are alive; keeps the peak.

    Deterministic (tensor bytes, not allocator pages) and device-agnostic; tensors created before
    entering (inputs, parameters) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            value.untyped_storage().data_ptr()
            for value in tree_flatten((args, kwargs))[0]
            if isinstance(value, torch.Tensor)
        }
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size == 0 or key in self._seen or key in inputs:  # a view or in-place result
                    continue
                self._seen.add(key)
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._release, key, size)
        return out

    def _release(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Callable[[], int]]:
    """Yield a function returning the peak bytes allocated inside the block beyond those before it.

    CUDA: the caching allocator's peak statistics. CPU: live tensor storages, tracked per op.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = {"peak": 0}
        yield lambda: result["peak"]
        synchronize(device)
        result["peak"] = torch.cuda.max_memory_allocated(device) - before
        return
    tracker = LiveTensorBytes()
    with tracker:
        yield lambda: tracker.peak


# --------------------------------------------------------------------------------------------------
# Autograd: bytes kept for the backward pass


def saved_tensor_bytes(
    fn: Callable[[], torch.Tensor], exclude: Sequence[torch.Tensor] = ()
) -> tuple[int, int]:
    """Bytes of the distinct storages autograd saves while running ``fn()``: (all, beyond ``exclude``).

    Saved tensors are seen through ``torch.autograd.graph.saved_tensors_hooks``; a storage saved
    twice (or as several views) counts once, since it is kept once.
    """
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = fn()
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    del output
    total = sum(saved.values())
    return total, total - sum(size for key, size in saved.items() if key in excluded)


# --------------------------------------------------------------------------------------------------
# Admission: will it fit?

ACTIVATION_MARGIN = 1.5
"""Measured peaks of one forward pass ran up to about 1.3× the tensors counted below (temporaries)."""


def weight_bytes(config: ModelConfig, element_size: int) -> int:
    """Bytes of the model's weights, counted from the config alone (the meta device: no memory)."""
    from toolkit.model import Transformer  # the model imports this module's neighbours

    with torch.device("meta"):
        model = Transformer(config)
    return sum(p.numel() for p in model.parameters()) * element_size


def forward_bytes(config: ModelConfig, batch: int, seq_len: int, element_size: int) -> int:
    """An upper estimate of the activations one inference forward pass holds at its widest point: the
    residual stream and its normalised copy, q|k|v, the MLP's hidden width (two of it when gated) and
    the logits, all at once, times a margin for temporaries."""
    tokens = batch * seq_len
    qkv = (config.n_heads + 2 * config.kv_heads) * config.head_dim
    mlp = (2 if config.mlp == "swiglu" else 1) * config.d_mlp
    per_token = 4 * config.d_model + 2 * qkv + mlp + config.vocab_size
    return int(ACTIVATION_MARGIN * tokens * per_token * element_size)


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can take: free CUDA memory, or the kernel's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_shortfall(
    runs: Sequence[tuple[ModelConfig, int, int]],
    device: torch.device,
    element_size: int,
    weights_loaded: bool = False,
) -> str | None:
    """Why the models of ``runs`` ((config, batch, seq_len), all held at once) and the widest of their
    forward passes will not fit on ``device`` (a sentence naming both figures and what to lower), or
    None when they fit. ``weights_loaded``: the weights already take their memory; only the passes
    must fit in what is left."""
    weights = 0 if weights_loaded else sum(weight_bytes(config, element_size) for config, _, _ in runs)
    widest = max(runs, key=lambda run: forward_bytes(run[0], run[1], run[2], element_size))
    activations = forward_bytes(widest[0], widest[1], widest[2], element_size)
    available = available_bytes(device)
    if available is None or weights + activations <= available:
        return None
    where = "free CUDA memory" if device.type == "cuda" else "available RAM"
    models = "the model needs" if len(runs) == 1 else f"the {len(runs)} models held at once need"
    return (
        f"{models} about {_gib(weights)} of weights and {_gib(activations)} of activations for batch "
        f"{widest[1]} × {widest[2]} tokens, {_gib(weights + activations)} in all, but the {where} is "
        f"{_gib(available)}; lower the model's size ({setting('d_model')}, {setting('n_layers')}, "
        f"{setting('d_mlp')}, {setting('vocab_size')}), {setting('seq_len')} or {setting('batch')}, or "
        "use a smaller dtype"
    )


def check_fits(
    runs: Sequence[tuple[ModelConfig, int, int]],
    device: torch.device,
    element_size: int,
    weights_loaded: bool = False,
) -> None:
    """Raise :class:`InsufficientMemoryError` before any work when :func:`memory_shortfall` finds one."""
    shortfall = memory_shortfall(runs, device, element_size, weights_loaded)
    if shortfall is not None:
        raise InsufficientMemoryError(shortfall)


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"
