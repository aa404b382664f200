"""A custom LayerNorm: a drop-in for ``torch.nn.LayerNorm`` with a hand-derived backward.

For a row x of length N (the flattened ``normalized_shape``), with D = N (PyTorch's biased
variance) or D = N - 1 (``unbiased=True``):

    mean = sum(x) / N
    rstd = 1 / sqrt(sum((x - mean)^2) / D + eps)          # two passes: never E[x^2] - E[x]^2
    xhat = (x - mean) * rstd
    y    = xhat * weight + bias

and, with g = dy * weight,

    dx      = rstd * (g - mean(g) - xhat * sum(g * xhat) / D)
    dweight = sum over rows of dy * xhat
    dbias   = sum over rows of dy

The backward keeps only the input and the per-row mean and rstd (plus the weight, a parameter that
lives anyway): no more than PyTorch's own LayerNorm, while autograd keeps twice the input's bytes
when the same forward is written in plain ops (``toolkit layernorm-compare`` measures both).
Statistics are accumulated in float32 (float64 for float64 inputs), also for bfloat16 and float16
inputs.

Backends compute the same thing:

- ``torch-ops``: the formulas above in plain PyTorch ops; the readable reference, any device.
- ``numba``: a CPU kernel (Numba, cached on disk) that handles each row while it is in cache, so
  x is read from memory once; rows are spread over ``torch.get_num_threads()`` threads, and small
  calls (under 65,536 elements) run on one thread. float32 and float64 natively; other dtypes
  through a float32 copy.
- ``triton``: fused CUDA kernels (``toolkit.layernorm.triton_kernels``), imported only when a CUDA tensor
  arrives and Triton is installed.
- ``auto`` picks ``triton`` for CUDA tensors and ``numba`` for CPU tensors when they can run,
  else ``torch-ops``.

``unbiased=True`` divides the variance by N - 1, as some texts write LayerNorm. That is *not*
PyTorch's semantics (``torch.nn.LayerNorm`` uses the biased variance); it exists to reproduce
those texts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from toolkit.errors import ConfigError, InputError
from toolkit.layernorm.backends import (
    BACKENDS,
    as_dtype,
    available_backends,
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

__all__ = [
    "BACKENDS",
    "FeatureBatchNorm",
    "LayerNorm",
    "LayerNormFunction",
    "available_backends",
    "layer_norm",
    "resolve_backend",
]

# --------------------------------------------------------------------------------------------
# torch-ops: the readable reference backend
# --------------------------------------------------------------------------------------------


def _forward_torch_ops(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, divisor: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, N) -> y (M, N) in x's dtype, mean (M,), rstd (M,) in the compute dtype."""
    xc = x.to(compute_dtype(x.dtype))
    mean = xc.mean(dim=1, keepdim=True)  # (M, 1)
    centered = xc - mean  # (M, N)
    variance = centered.square().sum(dim=1, keepdim=True) / divisor  # (M, 1)
    rstd = torch.rsqrt(variance + eps)  # (M, 1)
    y = centered * rstd
    if weight is not None:
        y = y * weight.to(xc.dtype)
    if bias is not None:
        y = y + bias.to(xc.dtype)
    return y.to(x.dtype), mean.squeeze(1), rstd.squeeze(1)


def _backward_torch_ops(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    divisor: int,
    need_dx: bool,
    need_dweight: bool,
    need_dbias: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """dy (M, N) -> dx (M, N), dweight (N,), dbias (N,) in the compute dtype (None where not needed)."""
    dyc = dy.to(mean.dtype)
    xhat = (x.to(mean.dtype) - mean[:, None]) * rstd[:, None]  # (M, N)
    dx = dweight = dbias = None
    if need_dx:
        g = dyc * weight.to(mean.dtype) if weight is not None else dyc  # (M, N)
        mean_g = g.mean(dim=1, keepdim=True)  # (M, 1)
        projection = (g * xhat).sum(dim=1, keepdim=True) / divisor  # (M, 1)
        dx = rstd[:, None] * (g - mean_g - xhat * projection)
    if need_dweight:
        dweight = (dyc * xhat).sum(dim=0)
    if need_dbias:
        dbias = dyc.sum(dim=0)
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------------
# numba: the CPU kernel (see numba_kernels.py)
# --------------------------------------------------------------------------------------------


def _forward_numba(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, divisor: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kernels = load_numba_kernels()
    assert kernels is not None
    compute = compute_dtype(x.dtype)
    xk = x if x.dtype == compute else x.to(compute)
    M, N = xk.shape
    y = torch.empty_like(xk)
    stats = torch.empty(2, M, dtype=compute)  # mean, rstd
    stats_view = stats.numpy()  # one conversion for both rows (each costs about a microsecond)
    parallel, n_chunks = kernels.launch_plan(M, M * N, torch.get_num_threads())
    kernel = kernels.forward_parallel if parallel else kernels.forward_serial
    kernel(
        xk.numpy(),
        kernel_operand(weight, N, compute, 1.0),
        kernel_operand(bias, N, compute, 0.0),
        y.numpy(),
        stats_view[0],
        stats_view[1],
        eps,
        divisor,
        n_chunks,
    )
    return (y if y.dtype == x.dtype else y.to(x.dtype)), stats[0], stats[1]


def _backward_numba(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    divisor: int,
    need_dx: bool,
    need_dweight: bool,
    need_dbias: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    kernels = load_numba_kernels()
    assert kernels is not None
    compute = mean.dtype
    xk = x if x.dtype == compute else x.to(compute)
    dyk = dy if dy.dtype == compute else dy.to(compute)
    M, N = xk.shape
    dx = torch.empty_like(xk) if need_dx else torch.empty(0, N, dtype=compute)
    # dweight and dbias are reduced from per-chunk partials in float64 inside the kernel.
    params = torch.empty(2, N if (need_dweight or need_dbias) else 0, dtype=compute)
    params_view = params.numpy()
    parallel, n_chunks = kernels.launch_plan(M, M * N, torch.get_num_threads())
    kernel = kernels.backward_parallel if parallel else kernels.backward_serial
    kernel(
        dyk.numpy(),
        xk.numpy(),
        kernel_operand(weight, N, compute, 1.0),
        mean.numpy(),
        rstd.numpy(),
        dx.numpy(),
        params_view[0],
        params_view[1],
        divisor,
        need_dx,
        n_chunks,
    )
    return (
        (dx if need_dx else None),
        (params[0] if need_dweight else None),
        (params[1] if need_dbias else None),
    )


# --------------------------------------------------------------------------------------------
# The autograd Function
# --------------------------------------------------------------------------------------------


def _forward(
    backend: str,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    divisor: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if backend == "numba":
        return _forward_numba(x, weight, bias, eps, divisor)
    if backend == "triton":
        kernels = load_triton_kernels()
        assert kernels is not None
        result: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = kernels.forward(
            x, weight, bias, eps, divisor
        )
        return result
    return _forward_torch_ops(x, weight, bias, eps, divisor)


def _backward(
    backend: str, *args: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    if backend == "numba":
        return _backward_numba(*args)
    if backend == "triton":
        kernels = load_triton_kernels()
        assert kernels is not None
        result: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None] = kernels.backward(*args)
        return result
    return _backward_torch_ops(*args)


class LayerNormFunction(torch.autograd.Function):
    """y = (x - mean) * rstd * weight + bias over the trailing ``shape``; saves x, mean, rstd (and weight)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        shape: tuple[int, ...],
        eps: float,
        divisor: int,
        backend: str,
    ) -> torch.Tensor:
        """Normalise over the trailing ``shape``; the variance is the squared deviations' sum / divisor."""
        row_size = weight.numel() if weight is not None else math.prod(shape)
        x2d = x.reshape(-1, row_size).contiguous()  # (M, N): one row per normalised vector
        w, b = flat_param(weight, row_size), flat_param(bias, row_size)
        y, mean, rstd = _forward(backend, x2d, w, b, eps, divisor)
        ctx.save_for_backward(x2d, w, mean, rstd)
        ctx.meta = (backend, divisor, shape, None if bias is None else bias.dtype)
        return y.view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2d, w, mean, rstd = ctx.saved_tensors
        backend, divisor, shape, bias_dtype = ctx.meta
        need_dx, need_dweight, need_dbias = ctx.needs_input_grad[:3]
        dy2d = dy.reshape(-1, x2d.shape[1]).contiguous()
        dx, dweight, dbias = _backward(
            backend, dy2d, x2d, w, mean, rstd, divisor, need_dx, need_dweight, need_dbias
        )
        return (
            None if dx is None else as_dtype(dx, dy.dtype).view_as(dy),
            None if dweight is None else param_shaped(as_dtype(dweight, w.dtype), shape),
            None if dbias is None else param_shaped(as_dtype(dbias, bias_dtype), shape),
            None,
            None,
            None,
            None,
        )


def layer_norm(
    x: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    unbiased: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """``torch.nn.functional.layer_norm`` with the custom backward, and ``unbiased``/``backend`` added."""
    shape = check_norm_input("LayerNorm", x, normalized_shape, {"weight": weight, "bias": bias})
    row_size = math.prod(shape)
    if unbiased and row_size < 2:
        raise InputError("unbiased LayerNorm needs at least 2 elements per row (it divides by N - 1)")
    concrete = resolve_backend(backend, x.device, row_size)
    divisor = row_size - 1 if unbiased else row_size
    if not torch.is_grad_enabled() or not (
        x.requires_grad
        or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)
    ):  # nothing to differentiate: skip autograd's bookkeeping
        w, b = flat_param(weight, row_size), flat_param(bias, row_size)
        y, _, _ = _forward(concrete, x.reshape(-1, row_size).contiguous(), w, b, float(eps), divisor)
        return y.view_as(x)
    apply = LayerNormFunction.apply
    result: torch.Tensor = apply(x, weight, bias, shape, float(eps), divisor, concrete)  # type: ignore[no-untyped-call]
    return result


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """Drop-in for ``torch.nn.LayerNorm``: same constructor, parameters, state-dict keys and results.

    Extra keyword-only arguments: ``backend`` (``auto``, ``torch-ops``, ``numba``, ``triton``) and
    ``unbiased`` (divide the variance by N - 1; not PyTorch's semantics, see the module docstring).
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        unbiased: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape_of(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.unbiased = unbiased
        if backend not in BACKENDS:
            raise ConfigError(f"unknown LayerNorm backend {backend!r}; valid values: {', '.join(BACKENDS)}")
        self.backend = backend
        if unbiased and math.prod(self.normalized_shape) < 2:
            raise ConfigError("unbiased LayerNorm needs at least 2 elements per row (it divides by N - 1)")
        factory = {"device": device, "dtype": dtype}
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory))  # type: ignore[arg-type]
            if bias:
                self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory))  # type: ignore[arg-type]
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(
            x,
            self.normalized_shape,
            self.weight,
            self.bias,
            self.eps,
            unbiased=self.unbiased,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        text = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.unbiased:
            text += ", unbiased=True"
        return text + f", backend={self.backend!r}"


# --------------------------------------------------------------------------------------------
# The other normalisation the training study compares (RMSNorm is torch.nn.RMSNorm)
# --------------------------------------------------------------------------------------------


class FeatureBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last (feature) dimension of (..., d): statistics over all other positions.

    In a causal language model this lets a token's normalisation see the batch's later tokens
    while training; evaluation uses the running statistics, so validation loss stays causal.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)
