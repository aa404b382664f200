"""A custom RMSNorm: a drop-in for ``torch.nn.RMSNorm`` / ``torch.nn.functional.rms_norm`` with a
hand-derived backward and the LayerNorm's backends.

For a row x of length N (the flattened ``normalized_shape``):

    rstd = 1 / sqrt(sum(x^2) / N + eps)          # no mean, no bias
    xhat = x * rstd
    y    = xhat * weight

and, with g = dy * weight,

    dx      = rstd * (g - xhat * sum(g * xhat) / N)
    dweight = sum over rows of dy * xhat

The backward keeps the input and one float per row (rstd). ``eps=None`` means the input dtype's
machine epsilon, as in PyTorch. Statistics are accumulated in float32 (float64 for float64 inputs),
also for bfloat16 and float16 inputs, and the result is cast back, as Hugging Face's Llama RMSNorm
computes it.

PyTorch's CPU RMSNorm is a chain of separate operations (square, mean, add, rsqrt, two products),
each a pass over memory; the ``numba`` backend reads each row once while it sits in cache, like
the LayerNorm kernel. ``triton`` fuses the same on CUDA; ``torch-ops`` is the readable reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from toolkit.errors import ConfigError
from toolkit.layernorm.backends import (
    BACKENDS,
    as_dtype,
    check_norm_input,
    compute_dtype,
    flat_param,
    kernel_operand,
    load_numba_kernels,
    load_triton_kernels,
    normalized_shape_of,
    param_shaped,
    resolve_backend,
)

# --------------------------------------------------------------------------------------------
# The backends
# --------------------------------------------------------------------------------------------


def _forward_torch_ops(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, N) -> y (M, N) in x's dtype, rstd (M,) in the compute dtype."""
    xc = x.to(compute_dtype(x.dtype))
    rstd = torch.rsqrt(xc.square().mean(dim=1, keepdim=True) + eps)  # (M, 1)
    y = xc * rstd
    if weight is not None:
        y = y * weight.to(xc.dtype)
    return y.to(x.dtype), rstd.squeeze(1)


def _backward_torch_ops(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    rstd: torch.Tensor,
    need_dx: bool,
    need_dweight: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """dy (M, N) -> dx (M, N), dweight (N,) in the compute dtype (None where not needed)."""
    dyc = dy.to(rstd.dtype)
    xhat = x.to(rstd.dtype) * rstd[:, None]  # (M, N)
    dx = dweight = None
    if need_dx:
        g = dyc * weight.to(rstd.dtype) if weight is not None else dyc  # (M, N)
        projection = (g * xhat).mean(dim=1, keepdim=True)  # (M, 1)
        dx = rstd[:, None] * (g - xhat * projection)
    if need_dweight:
        dweight = (dyc * xhat).sum(dim=0)
    return dx, dweight


def _forward_numba(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = load_numba_kernels()
    assert kernels is not None
    compute = compute_dtype(x.dtype)
    xk = x if x.dtype == compute else x.to(compute)
    M, N = xk.shape
    y = torch.empty_like(xk)
    rstd = torch.empty(M, dtype=compute)
    parallel, n_chunks = kernels.launch_plan(M, M * N, torch.get_num_threads())
    kernel = kernels.rms_forward_parallel if parallel else kernels.rms_forward_serial
    kernel(xk.numpy(), kernel_operand(weight, N, compute, 1.0), y.numpy(), rstd.numpy(), eps, n_chunks)
    return (y if y.dtype == x.dtype else y.to(x.dtype)), rstd


def _backward_numba(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    rstd: torch.Tensor,
    need_dx: bool,
    need_dweight: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    kernels = load_numba_kernels()
    assert kernels is not None
    compute = rstd.dtype
    xk = x if x.dtype == compute else x.to(compute)
    dyk = dy if dy.dtype == compute else dy.to(compute)
    M, N = xk.shape
    dx = torch.empty_like(xk) if need_dx else torch.empty(0, N, dtype=compute)
    dweight = torch.empty(N if need_dweight else 0, dtype=compute)  # reduced in float64 inside
    parallel, n_chunks = kernels.launch_plan(M, M * N, torch.get_num_threads())
    kernel = kernels.rms_backward_parallel if parallel else kernels.rms_backward_serial
    kernel(
        dyk.numpy(),
        xk.numpy(),
        kernel_operand(weight, N, compute, 1.0),
        rstd.numpy(),
        dx.numpy(),
        dweight.numpy(),
        need_dx,
        n_chunks,
    )
    return (dx if need_dx else None), (dweight if need_dweight else None)


def _forward(
    backend: str, x: torch.Tensor, weight: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "numba":
        return _forward_numba(x, weight, eps)
    if backend == "triton":
        kernels = load_triton_kernels()
        assert kernels is not None
        result: tuple[torch.Tensor, torch.Tensor] = kernels.rms_forward(x, weight, eps)
        return result
    return _forward_torch_ops(x, weight, eps)


def _backward(backend: str, *args: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if backend == "numba":
        return _backward_numba(*args)
    if backend == "triton":
        kernels = load_triton_kernels()
        assert kernels is not None
        result: tuple[torch.Tensor | None, torch.Tensor | None] = kernels.rms_backward(*args)
        return result
    return _backward_torch_ops(*args)


# --------------------------------------------------------------------------------------------
# The autograd Function, the functional and the module
# --------------------------------------------------------------------------------------------


class RMSNormFunction(torch.autograd.Function):
    """y = x * rstd * weight over the trailing ``shape``; saves x and rstd (and the weight)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        shape: tuple[int, ...],
        eps: float,
        backend: str,
    ) -> torch.Tensor:
        """RMS-normalise over the trailing ``shape``."""
        row_size = math.prod(shape)
        x2d = x.reshape(-1, row_size).contiguous()  # (M, N): one row per normalised vector
        w = flat_param(weight, row_size)
        y, rstd = _forward(backend, x2d, w, eps)
        ctx.save_for_backward(x2d, w, rstd)
        ctx.meta = (backend, shape)
        return y.view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2d, w, rstd = ctx.saved_tensors
        backend, shape = ctx.meta
        need_dx, need_dweight = ctx.needs_input_grad[:2]
        dy2d = dy.reshape(-1, x2d.shape[1]).contiguous()
        dx, dweight = _backward(backend, dy2d, x2d, w, rstd, need_dx, need_dweight)
        return (
            None if dx is None else as_dtype(dx, dy.dtype).view_as(dy),
            None if dweight is None else param_shaped(as_dtype(dweight, w.dtype), shape),
            None,
            None,
            None,
        )


def rms_norm(
    x: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """``torch.nn.functional.rms_norm`` with the custom backward and a ``backend`` (auto, torch-ops,
    numba, triton). ``eps=None``: the machine epsilon of x's dtype, as in PyTorch."""
    shape = check_norm_input("RMSNorm", x, normalized_shape, {"weight": weight})
    row_size = math.prod(shape)
    concrete = resolve_backend(backend, x.device, row_size)
    epsilon = float(torch.finfo(x.dtype).eps if eps is None else eps)
    if not torch.is_grad_enabled() or not (x.requires_grad or (weight is not None and weight.requires_grad)):
        y, _ = _forward(concrete, x.reshape(-1, row_size).contiguous(), flat_param(weight, row_size), epsilon)
        return y.view_as(x)
    apply = RMSNormFunction.apply
    result: torch.Tensor = apply(x, weight, shape, epsilon, concrete)  # type: ignore[no-untyped-call]
    return result


class RMSNorm(nn.Module):
    """Drop-in for ``torch.nn.RMSNorm``: same constructor, parameter, state-dict key and results.

    Extra keyword-only argument: ``backend`` (``auto``, ``torch-ops``, ``numba``, ``triton``).
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape_of(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if backend not in BACKENDS:
            raise ConfigError(f"unknown RMSNorm backend {backend!r}; valid values: {', '.join(BACKENDS)}")
        self.backend = backend
        self.weight: nn.Parameter | None
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"backend={self.backend!r}"
        )
