"""Fused Triton LayerNorm and RMSNorm kernels for CUDA tensors (imported by ``toolkit.layernorm`` only
on CUDA).

Forward: each program normalises ``BLOCK_M`` whole rows held in registers (one read of x, one
write of y, plus mean and rstd per row). The mean is taken of the row shifted by its first
element, so that a large common offset does not cost float32 precision; the variance is the mean
of squared deviations from that mean (two passes over registers, never E[x^2] - E[x]^2).

Backward: a fixed number of programs (a few per SM) each walk a contiguous range of rows, write dx
for them and accumulate that range's weight and bias gradients in registers; the per-program
partials are summed afterwards. All arithmetic is float32 whatever the input dtype.

Rows up to ``MAX_ROW_SIZE`` elements are supported (a row must fit in registers).
"""

# Kernel parameters stay unannotated: Triton reads parameter annotations as kernel types.
# mypy: disable-error-code="no-untyped-def, untyped-decorator"

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROW_SIZE = 16384
_TILE_ELEMENTS = 4096  # small rows are packed BLOCK_M to a program up to this many elements
_PROGRAMS_PER_SM = 4  # backward programs per streaming multiprocessor


@triton.jit
def _forward_kernel(
    X,
    Y,
    W,
    B,
    Mean,
    Rstd,
    M,
    N,
    eps,
    divisor,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    row_mask = rows < M
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]  # (BLOCK_M, BLOCK_N)
    offsets = rows[:, None].to(tl.int64) * N + cols[None, :]
    x = tl.load(X + offsets, mask=mask, other=0.0).to(tl.float32)
    shift = tl.load(X + rows.to(tl.int64) * N, mask=row_mask, other=0.0).to(tl.float32)  # x[:, 0]
    shifted = tl.where(mask, x - shift[:, None], 0.0)
    mean = shift + tl.sum(shifted, axis=1) / N  # (BLOCK_M,)
    centred = tl.where(mask, x - mean[:, None], 0.0)
    variance = tl.sum(centred * centred, axis=1) / divisor
    rstd = 1.0 / tl.sqrt_rn(variance + eps)  # IEEE square root (tl.sqrt may be approximate)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + rows, mean, mask=row_mask)
    tl.store(Rstd + rows, rstd, mask=row_mask)


@triton.jit
def _backward_kernel(
    DY,
    X,
    W,
    Mean,
    Rstd,
    DX,
    DW_partial,
    DB_partial,
    M,
    N,
    divisor,
    rows_per_program,
    NEED_DX: tl.constexpr,
    NEED_PARAMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    row_start = program * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, M)
    for start in range(row_start, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        offsets = rows[:, None].to(tl.int64) * N + cols[None, :]
        x = tl.load(X + offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + rows, mask=row_mask, other=0.0)
        rstd = tl.load(Rstd + rows, mask=row_mask, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if NEED_PARAMS:
            dw_sum += tl.sum(dy * xhat, axis=0)
            db_sum += tl.sum(dy, axis=0)
        if NEED_DX:
            g = dy * w[None, :]
            mean_g = tl.sum(g, axis=1) / N
            projection = tl.sum(g * xhat, axis=1) / divisor
            dx = (g - mean_g[:, None] - xhat * projection[:, None]) * rstd[:, None]
            tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=mask)
    if NEED_PARAMS:
        tl.store(DW_partial + program * N + cols, dw_sum, mask=col_mask)
        tl.store(DB_partial + program * N + cols, db_sum, mask=col_mask)


def _settings(row_size: int) -> tuple[int, int, int]:
    """BLOCK_M, BLOCK_N and num_warps for rows of ``row_size`` elements."""
    block_n = triton.next_power_of_2(row_size)
    block_m = max(1, _TILE_ELEMENTS // block_n)
    tile = block_m * block_n
    num_warps = 16 if tile >= 8192 else 8 if tile >= 2048 else 4
    return block_m, block_n, num_warps


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).multi_processor_count)
    return 4  # the Triton interpreter (TRITON_INTERPRET=1) runs on CPU tensors


def forward(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, divisor: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, N) contiguous -> y (M, N) in x's dtype, mean (M,), rstd (M,) in float32."""
    M, N = x.shape
    if N > MAX_ROW_SIZE:
        raise ValueError(f"rows of {N} elements exceed the Triton kernel's {MAX_ROW_SIZE}")
    w = weight if weight is not None else torch.ones(N, device=x.device, dtype=x.dtype)
    b = bias if bias is not None else torch.zeros(N, device=x.device, dtype=x.dtype)
    y = torch.empty_like(x)
    mean = torch.empty(M, device=x.device, dtype=torch.float32)
    rstd = torch.empty(M, device=x.device, dtype=torch.float32)
    if M == 0:
        return y, mean, rstd
    block_m, block_n, num_warps = _settings(N)
    grid = (triton.cdiv(M, block_m),)
    _forward_kernel[grid](
        x,
        y,
        w.contiguous(),
        b.contiguous(),
        mean,
        rstd,
        M,
        N,
        eps,
        divisor,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=num_warps,
    )
    return y, mean, rstd


def backward(
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
    """dy (M, N) contiguous -> dx (M, N) in x's dtype, dweight (N,), dbias (N,) in float32."""
    M, N = x.shape
    need_params = need_dweight or need_dbias
    w = weight if weight is not None else torch.ones(N, device=x.device, dtype=x.dtype)
    dx = torch.empty_like(x) if need_dx else x  # x is never written when NEED_DX is false
    if M == 0:
        zeros = torch.zeros(N, device=x.device, dtype=torch.float32)
        return (dx if need_dx else None), (zeros if need_dweight else None), (zeros if need_dbias else None)
    block_m, block_n, num_warps = _settings(N)
    programs = min(_PROGRAMS_PER_SM * _sm_count(x.device), triton.cdiv(M, block_m))
    rows_per_program = triton.cdiv(triton.cdiv(M, programs), block_m) * block_m  # whole tiles
    programs = triton.cdiv(M, rows_per_program)
    partial_rows = programs if need_params else 1
    dweight_partial = torch.empty(partial_rows, N, device=x.device, dtype=torch.float32)
    dbias_partial = torch.empty(partial_rows, N, device=x.device, dtype=torch.float32)
    _backward_kernel[(programs,)](
        dy,
        x,
        w.contiguous(),
        mean,
        rstd,
        dx,
        dweight_partial,
        dbias_partial,
        M,
        N,
        divisor,
        rows_per_program,
        NEED_DX=need_dx,
        NEED_PARAMS=need_params,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=num_warps,
    )
    dweight = dweight_partial.sum(dim=0) if need_dweight else None
    dbias = dbias_partial.sum(dim=0) if need_dbias else None
    return (dx if need_dx else None), dweight, dbias


# --------------------------------------------------------------------------------------------------
# RMSNorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x²) + eps); the same tiling as the LayerNorm's


@triton.jit
def _rms_forward_kernel(X, Y, W, Rstd, M, N, eps, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    row_mask = rows < M
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]  # (BLOCK_M, BLOCK_N)
    offsets = rows[:, None].to(tl.int64) * N + cols[None, :]
    x = tl.load(X + offsets, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt_rn(tl.sum(x * x, axis=1) / N + eps)  # (BLOCK_M,)
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Rstd + rows, rstd, mask=row_mask)


@triton.jit
def _rms_backward_kernel(
    DY,
    X,
    W,
    Rstd,
    DX,
    DW_partial,
    M,
    N,
    rows_per_program,
    NEED_DX: tl.constexpr,
    NEED_WEIGHT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    row_start = program * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, M)
    for start in range(row_start, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        offsets = rows[:, None].to(tl.int64) * N + cols[None, :]
        x = tl.load(X + offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offsets, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + rows, mask=row_mask, other=0.0)
        xhat = x * rstd[:, None]
        if NEED_WEIGHT:
            dw_sum += tl.sum(dy * xhat, axis=0)
        if NEED_DX:
            g = dy * w[None, :]
            projection = tl.sum(g * xhat, axis=1) / N
            dx = (g - xhat * projection[:, None]) * rstd[:, None]
            tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=mask)
    if NEED_WEIGHT:
        tl.store(DW_partial + program * N + cols, dw_sum, mask=col_mask)


def rms_forward(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, N) contiguous -> y (M, N) in x's dtype, rstd (M,) in float32."""
    M, N = x.shape
    if N > MAX_ROW_SIZE:
        raise ValueError(f"rows of {N} elements exceed the Triton kernel's {MAX_ROW_SIZE}")
    w = weight if weight is not None else torch.ones(N, device=x.device, dtype=x.dtype)
    y = torch.empty_like(x)
    rstd = torch.empty(M, device=x.device, dtype=torch.float32)
    if M == 0:
        return y, rstd
    block_m, block_n, num_warps = _settings(N)
    grid = (triton.cdiv(M, block_m),)
    _rms_forward_kernel[grid](
        x, y, w.contiguous(), rstd, M, N, eps, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps
    )
    return y, rstd


def rms_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    rstd: torch.Tensor,
    need_dx: bool,
    need_dweight: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """dy (M, N) contiguous -> dx (M, N) in x's dtype, dweight (N,) in float32."""
    M, N = x.shape
    w = weight if weight is not None else torch.ones(N, device=x.device, dtype=x.dtype)
    dx = torch.empty_like(x) if need_dx else x  # x is never written when NEED_DX is false
    if M == 0:
        zeros = torch.zeros(N, device=x.device, dtype=torch.float32)
        return (dx if need_dx else None), (zeros if need_dweight else None)
    block_m, block_n, num_warps = _settings(N)
    programs = min(_PROGRAMS_PER_SM * _sm_count(x.device), triton.cdiv(M, block_m))
    rows_per_program = triton.cdiv(triton.cdiv(M, programs), block_m) * block_m  # whole tiles
    programs = triton.cdiv(M, rows_per_program)
    dweight_partial = torch.empty(programs if need_dweight else 1, N, device=x.device, dtype=torch.float32)
    _rms_backward_kernel[(programs,)](
        dy,
        x,
        w.contiguous(),
        rstd,
        dx,
        dweight_partial,
        M,
        N,
        rows_per_program,
        NEED_DX=need_dx,
        NEED_WEIGHT=need_dweight,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=num_warps,
    )
    return (dx if need_dx else None), (dweight_partial.sum(dim=0) if need_dweight else None)
