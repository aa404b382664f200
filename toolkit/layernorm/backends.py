"""What the custom LayerNorm and RMSNorm share: the backends (which can run here, which ``auto``
picks), the compute dtype and kernel operands, and the checks of an input against its normalised shape.

The Numba kernels are imported when first needed; the Triton kernels only when CUDA and Triton are
there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from toolkit.errors import BackendError, ConfigError, InputError

BACKENDS = ("auto", "torch-ops", "numba", "triton")
"""Names accepted by ``backend=``; ``auto`` picks the fastest one that can run on the input."""


# --------------------------------------------------------------------------------------------
# Backend availability and choice
# --------------------------------------------------------------------------------------------


@functools.cache
def load_numba_kernels() -> ModuleType | None:
    """The compiled-on-demand Numba kernels, or None when Numba is not installed."""
    try:
        from toolkit.layernorm import numba_kernels
    except ImportError:
        return None
    return numba_kernels


@functools.cache
def load_triton_kernels() -> ModuleType | None:
    """The Triton kernels, or None without CUDA or without Triton (imported lazily, never on CPU)."""
    if not torch.cuda.is_available():
        return None
    try:
        from toolkit.layernorm import triton_kernels
    except ImportError:
        return None
    return triton_kernels


def available_backends(device: torch.device | str) -> list[str]:
    """The concrete backends that can run on ``device``, slowest (the reference) first."""
    device = torch.device(device)
    names = ["torch-ops"]
    if device.type == "cpu" and load_numba_kernels() is not None:
        names.append("numba")
    if device.type == "cuda" and load_triton_kernels() is not None:
        names.append("triton")
    return names


@functools.lru_cache(maxsize=64)
def resolve_backend(backend: str, device: torch.device, row_size: int = 1) -> str:
    """The concrete backend ``backend`` means for tensors on ``device`` with rows of ``row_size``."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown LayerNorm backend {backend!r}; valid values: {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda" and load_triton_kernels() is not None and row_size <= _triton_max_row():
            return "triton"
        if device.type == "cpu" and load_numba_kernels() is not None:
            return "numba"
        return "torch-ops"
    if backend == "numba":
        if device.type != "cpu":
            raise BackendError(f"the numba LayerNorm backend runs on the CPU, not {device.type}; use auto")
        if load_numba_kernels() is None:
            raise BackendError("the numba LayerNorm backend needs numba; pip install numba, or use torch-ops")
    if backend == "triton":
        if device.type != "cuda":
            raise BackendError(f"the triton LayerNorm backend runs on CUDA, not {device.type}; use auto")
        if load_triton_kernels() is None:
            raise BackendError("the triton LayerNorm backend needs triton; pip install triton, or use auto")
        if row_size > _triton_max_row():
            raise BackendError(
                f"the triton LayerNorm backend handles rows of at most {_triton_max_row()} elements, "
                f"got {row_size}; use auto or torch-ops"
            )
    return backend


def _triton_max_row() -> int:
    kernels = load_triton_kernels()
    return 0 if kernels is None else int(kernels.MAX_ROW_SIZE)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and arithmetic in float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.cache
def filled(size: int, dtype: torch.dtype, value: float) -> torch.Tensor:
    """A constant weight (ones) or bias (zeros) for norms without them; never written to."""
    return torch.full((size,), value, dtype=dtype)


def kernel_operand(param: torch.Tensor | None, size: int, dtype: torch.dtype, fill: float) -> Any:
    """A weight or bias as a NumPy array of the compute dtype (converted only when needed)."""
    if param is None:
        param = filled(size, dtype, fill)
    elif param.dtype != dtype:
        param = param.to(dtype)
    return param.numpy()


def flat_param(param: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """A weight or bias as one row of ``size`` elements (reshaped only when it has several dimensions)."""
    return param if param is None or param.dim() == 1 else param.reshape(size)


def param_shaped(grad: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A flat weight or bias gradient in the parameter's ``shape`` (viewed only when that has several
    dimensions)."""
    return grad if len(shape) == 1 else grad.view(shape)


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype``, converted only when it is not already."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def check_norm_input(
    what: str, x: torch.Tensor, normalized_shape: int | Sequence[int], params: dict[str, torch.Tensor | None]
) -> tuple[int, ...]:
    """The normalised shape, after refusing an input or parameter that does not fit it (``what``:
    LayerNorm or RMSNorm, for the message)."""
    shape = normalized_shape_of(normalized_shape)
    n_dims = len(shape)
    if x.dim() < n_dims or tuple(x.shape[x.dim() - n_dims :]) != shape:
        raise InputError(
            f"{what} over normalized_shape={list(shape)} expects input of shape [*, "
            f"{', '.join(map(str, shape))}], got {list(x.shape)}"
        )
    for name, param in params.items():
        if param is not None and tuple(param.shape) != shape:
            raise InputError(f"{what} {name} must have shape {list(shape)}, got {list(param.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{what} needs a floating-point input, got {x.dtype}")
    return shape


def normalized_shape_of(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"normalized_shape must be positive integers, got {normalized_shape!r}")
    return shape
