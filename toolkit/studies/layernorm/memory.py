"""Memory: bytes each implementation saves for the backward pass (saved-tensor hooks), and the peak
of one forward+backward.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from toolkit.device import device_name
from toolkit.memory import peak_memory, saved_tensor_bytes
from toolkit.progress import ProgressCallback, no_progress
from toolkit.studies.layernorm.implementations import implementations, make_inputs

MEMORY_SHAPE = (4096, 1024)


@dataclass
class MemoryRow:
    """Bytes one implementation keeps for backward, and its peak during forward+backward."""

    implementation: str
    saved_bytes: int  # all distinct storages saved for backward (input and parameters included)
    saved_extra_bytes: int  # of those, storages that are neither the input nor a parameter
    peak_bytes: int  # peak allocated during forward+backward beyond what existed before
    input_bytes: int

    @property
    def saved_vs_input(self) -> float:
        return self.saved_bytes / self.input_bytes

    @property
    def peak_vs_input(self) -> float:
        return self.peak_bytes / self.input_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saved_vs_input": self.saved_vs_input, "peak_vs_input": self.peak_vs_input}


@dataclass
class MemoryResult:
    shape: tuple[int, int]
    dtype: str
    device: str
    peak_method: str
    rows: list[MemoryRow]
    norm: str = "layer"  # "layer" or "rms"

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "device": self.device,
            "saved_method": "torch.autograd.graph.saved_tensors_hooks, distinct storages",
            "peak_method": self.peak_method,
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([row.to_dict() for row in self.rows])


def measure_memory(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    shape: tuple[int, int] = MEMORY_SHAPE,
    progress: ProgressCallback = no_progress,
    norm: str = "layer",
) -> MemoryResult:
    """Saved-for-backward bytes and forward+backward peak of every implementation of ``norm`` (layer
    or rms) on one input."""
    impls = implementations(device, extra=("autograd-ops",), norm=norm)
    x, weight, bias, dy = make_inputs(shape, dtype, device)
    rows = []
    for done, (name, fn) in enumerate(impls.items()):
        progress(done, len(impls), f"memory: {name}")
        xg, wg, bg = (t.clone().requires_grad_() for t in (x, weight, bias))
        fn(xg, wg, bg)  # compile kernels outside the measurement
        saved, extra = saved_tensor_bytes(functools.partial(fn, xg, wg, bg), exclude=(xg, wg, bg))
        with peak_memory(device) as peak:
            y = fn(xg, wg, bg)
            grads = torch.autograd.grad(y, (xg, wg, bg), dy, allow_unused=True)  # RMSNorms: no bias
            del y, grads
        rows.append(
            MemoryRow(
                implementation=name,
                saved_bytes=saved,
                saved_extra_bytes=extra,
                peak_bytes=peak(),
                input_bytes=x.numel() * x.element_size(),
            )
        )
    progress(len(impls), len(impls), "memory: done")
    method = (
        "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "live tensor storages tracked per op (TorchDispatchMode)"
    )
    return MemoryResult(shape, str(dtype).removeprefix("torch."), device_name(device), method, rows, norm)
