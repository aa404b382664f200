"""The CPU LayerNorm and RMSNorm kernels of ``toolkit.layernorm``, in Numba (parallel over rows, cached
on disk).

Each row is read from memory once: its passes (sum, centred sum of squares, normalise) run while
the row sits in the core's cache, so the kernels move the same bytes as PyTorch's own LayerNorm.
All sums are accumulated in the compute dtype (float32, or float64 for float64 inputs), which
keeps them vectorised: the mean as x[0] + mean(x - x[0]), so that a large common offset does not
cost precision, then the centred sum of squares (two passes, never E[x²] − E[x]²). The weight
and bias gradients are reduced from per-chunk partials (at most ``ROWS_PER_CHUNK`` rows each),
added up in float64.

``fastmath`` allows reassociation (so that the sums vectorise) but not ``nnan``/``ninf``: a NaN or
infinity in the input still reaches the output, as in PyTorch. Nor ``contract``: fusing
``dy * w - mean(dy * w)`` into one FMA keeps the product's rounding error where the exact result
cancels to zero (a one-element row's input gradient came out 5e-5 instead of 0).

Each kernel has a parallel driver (``prange``) and a serial one for small inputs, where waking the
thread pool costs more than the work. The first call of each signature compiles (a few seconds);
``cache=True`` keeps the machine code in ``__pycache__`` for later processes.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

_FASTMATH = {"reassoc", "nsz", "arcp"}  # no "contract": see the module docstring
ROWS_PER_CHUNK = 256  # rows summed sequentially into one weight/bias partial
PARALLEL_MIN_ELEMENTS = 1 << 16  # smaller calls run on one thread: a parallel region costs more

Array = npt.NDArray[np.floating]  # float32 or float64, C-contiguous


def use_threads(n_elements: int, threads: int) -> bool:
    """Whether to run on ``threads`` threads (torch's setting, capped by Numba's pool), or serially.

    Small calls run serially: waking the thread pool costs more than their work.
    """
    threads = min(threads, int(numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if threads < 2 or n_elements < PARALLEL_MIN_ELEMENTS:
        return False
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
    return True


def chunk_count(n_rows: int) -> int:
    """Row chunks of the backward: at most ROWS_PER_CHUNK rows each, and a few per thread."""
    return max(1, min(n_rows, 4 * numba.get_num_threads()), math.ceil(n_rows / ROWS_PER_CHUNK))


@numba.njit(cache=True, fastmath=_FASTMATH)
def _normalise_row(
    x: Array, weight: Array, bias: Array, y: Array, mean: Array, rstd: Array, eps: float, divisor: int, i: int
) -> None:  # pragma: no cover - compiled
    """y[i] = (x[i] - mean) * rstd * weight + bias; writes mean[i], rstd[i]."""
    N = x.shape[1]
    shift = x[i, 0]  # summing x - x[0] keeps a large common offset from eating the sum's precision
    rstd[i] = 0.0
    total = rstd[i]  # a zero of the compute dtype
    for j in range(N):
        total += x[i, j] - shift
    mean[i] = shift + total / N
    mu = mean[i]  # read back: now in the compute dtype
    squares = rstd[i]
    for j in range(N):
        centred = x[i, j] - mu
        squares += centred * centred
    rstd[i] = 1.0 / np.sqrt(squares / divisor + eps)
    r = rstd[i]
    for j in range(N):
        y[i, j] = (x[i, j] - mu) * r * weight[j] + bias[j]


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def forward_parallel(
    x: Array, weight: Array, bias: Array, y: Array, mean: Array, rstd: Array, eps: float, divisor: int
) -> None:  # pragma: no cover - compiled
    """Normalise every row of x (M, N) into y, rows spread over the thread pool."""
    for i in numba.prange(x.shape[0]):
        _normalise_row(x, weight, bias, y, mean, rstd, eps, divisor, i)


@numba.njit(cache=True, fastmath=_FASTMATH)
def forward_serial(
    x: Array, weight: Array, bias: Array, y: Array, mean: Array, rstd: Array, eps: float, divisor: int
) -> None:  # pragma: no cover - compiled
    """Normalise every row of x (M, N) into y on the calling thread."""
    for i in range(x.shape[0]):
        _normalise_row(x, weight, bias, y, mean, rstd, eps, divisor, i)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _backward_chunk(
    dy: Array,
    x: Array,
    weight: Array,
    mean: Array,
    rstd: Array,
    dx: Array,
    partials: Array,
    divisor: int,
    need_dx: bool,
    need_params: bool,
    chunk: int,
) -> None:  # pragma: no cover - compiled
    """dx = rstd * (g - mean(g) - xhat * sum(g * xhat) / divisor), g = dy * weight, for one chunk of rows.

    Chunk c of n handles rows [c * rows, (c + 1) * rows) and, when ``need_params``, writes their
    sums of dy * xhat and dy into ``partials[0, c]`` and ``partials[1, c]`` (partials: (2, n, N)).
    """
    M, N = x.shape
    n_chunks = partials.shape[1]
    rows_per_chunk = (M + n_chunks - 1) // n_chunks
    scratch = np.zeros(2, dtype=mean.dtype)  # row constants, held in the compute dtype
    if need_params:
        for j in range(N):
            partials[0, chunk, j] = 0.0
            partials[1, chunk, j] = 0.0
    for i in range(chunk * rows_per_chunk, min(M, (chunk + 1) * rows_per_chunk)):
        mu = mean[i]
        r = rstd[i]
        sum_g = scratch[0]
        sum_g_xhat = scratch[0]
        if need_params:
            for j in range(N):
                xhat = (x[i, j] - mu) * r
                grad = dy[i, j]
                partials[0, chunk, j] += grad * xhat
                partials[1, chunk, j] += grad
                g = grad * weight[j]
                sum_g += g
                sum_g_xhat += g * xhat
        else:
            for j in range(N):
                g = dy[i, j] * weight[j]
                sum_g += g
                sum_g_xhat += g * ((x[i, j] - mu) * r)
        if need_dx:
            scratch[1] = sum_g / N
            mean_g = scratch[1]
            scratch[1] = sum_g_xhat / divisor
            projection = scratch[1]
            for j in range(N):
                xhat = (x[i, j] - mu) * r
                dx[i, j] = r * (dy[i, j] * weight[j] - mean_g - xhat * projection)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _reduce_partials(partials: Array, dweight: Array, dbias: Array) -> None:  # pragma: no cover - compiled
    """dweight and dbias: the chunks' partial sums added up in float64."""
    for j in range(dweight.shape[0]):
        total_weight = 0.0
        total_bias = 0.0
        for chunk in range(partials.shape[1]):
            total_weight += partials[0, chunk, j]
            total_bias += partials[1, chunk, j]
        dweight[j] = total_weight
        dbias[j] = total_bias


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def backward_parallel(
    dy: Array,
    x: Array,
    weight: Array,
    mean: Array,
    rstd: Array,
    dx: Array,
    dweight: Array,
    dbias: Array,
    divisor: int,
    need_dx: bool,
    n_chunks: int,
) -> None:  # pragma: no cover - compiled
    """dx, and dweight/dbias when they have N elements (else shape 0); chunks over the thread pool."""
    need_params = dweight.shape[0] > 0
    partials = np.empty((2, n_chunks, dweight.shape[0]), dtype=mean.dtype)
    for chunk in numba.prange(n_chunks):
        _backward_chunk(dy, x, weight, mean, rstd, dx, partials, divisor, need_dx, need_params, chunk)
    _reduce_partials(partials, dweight, dbias)


@numba.njit(cache=True, fastmath=_FASTMATH)
def backward_serial(
    dy: Array,
    x: Array,
    weight: Array,
    mean: Array,
    rstd: Array,
    dx: Array,
    dweight: Array,
    dbias: Array,
    divisor: int,
    need_dx: bool,
    n_chunks: int,
) -> None:  # pragma: no cover - compiled
    """The same on the calling thread."""
    need_params = dweight.shape[0] > 0
    partials = np.empty((2, n_chunks, dweight.shape[0]), dtype=mean.dtype)
    for chunk in range(n_chunks):
        _backward_chunk(dy, x, weight, mean, rstd, dx, partials, divisor, need_dx, need_params, chunk)
    _reduce_partials(partials, dweight, dbias)


# --------------------------------------------------------------------------------------------------
# RMSNorm: y = x * rstd * weight, rstd = 1 / sqrt(sum(x²) / N + eps); no mean, no bias


@numba.njit(cache=True, fastmath=_FASTMATH)
def _rms_row(x: Array, weight: Array, y: Array, rstd: Array, eps: float, i: int) -> None:  # pragma: no cover
    """y[i] = x[i] * rstd * weight; writes rstd[i]. One read of the row for the sum, one to scale it."""
    N = x.shape[1]
    rstd[i] = 0.0
    squares = rstd[i]  # a zero of the compute dtype
    for j in range(N):
        squares += x[i, j] * x[i, j]
    rstd[i] = 1.0 / np.sqrt(squares / N + eps)
    r = rstd[i]
    for j in range(N):
        y[i, j] = x[i, j] * r * weight[j]


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def rms_forward_parallel(
    x: Array, weight: Array, y: Array, rstd: Array, eps: float
) -> None:  # pragma: no cover - compiled
    """RMS-normalise every row of x (M, N) into y, rows spread over the thread pool."""
    for i in numba.prange(x.shape[0]):
        _rms_row(x, weight, y, rstd, eps, i)


@numba.njit(cache=True, fastmath=_FASTMATH)
def rms_forward_serial(
    x: Array, weight: Array, y: Array, rstd: Array, eps: float
) -> None:  # pragma: no cover - compiled
    """RMS-normalise every row of x (M, N) into y on the calling thread."""
    for i in range(x.shape[0]):
        _rms_row(x, weight, y, rstd, eps, i)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _rms_backward_chunk(
    dy: Array,
    x: Array,
    weight: Array,
    rstd: Array,
    dx: Array,
    partials: Array,
    need_dx: bool,
    need_weight: bool,
    chunk: int,
) -> None:  # pragma: no cover - compiled
    """dx = rstd * (g - xhat * sum(g * xhat) / N), g = dy * weight, xhat = x * rstd, for one chunk of
    rows; with ``need_weight``, their sum of dy * xhat into ``partials[chunk]`` (partials: (n, N))."""
    M, N = x.shape
    n_chunks = partials.shape[0]
    rows_per_chunk = (M + n_chunks - 1) // n_chunks
    scratch = np.zeros(2, dtype=rstd.dtype)  # row constants, held in the compute dtype
    if need_weight:
        for j in range(N):
            partials[chunk, j] = 0.0
    for i in range(chunk * rows_per_chunk, min(M, (chunk + 1) * rows_per_chunk)):
        r = rstd[i]
        sum_g_xhat = scratch[0]
        if need_weight:
            for j in range(N):
                xhat = x[i, j] * r
                grad = dy[i, j]
                partials[chunk, j] += grad * xhat
                sum_g_xhat += grad * weight[j] * xhat
        else:
            for j in range(N):
                sum_g_xhat += dy[i, j] * weight[j] * (x[i, j] * r)
        if need_dx:
            scratch[1] = sum_g_xhat / N
            projection = scratch[1]
            for j in range(N):
                dx[i, j] = r * (dy[i, j] * weight[j] - x[i, j] * r * projection)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _reduce_rms_partials(partials: Array, dweight: Array) -> None:  # pragma: no cover - compiled
    """dweight: the chunks' partial sums added up in float64."""
    for j in range(dweight.shape[0]):
        total = 0.0
        for chunk in range(partials.shape[0]):
            total += partials[chunk, j]
        dweight[j] = total


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def rms_backward_parallel(
    dy: Array, x: Array, weight: Array, rstd: Array, dx: Array, dweight: Array, need_dx: bool, n_chunks: int
) -> None:  # pragma: no cover - compiled
    """dx, and dweight when it has N elements (else shape 0); chunks over the thread pool."""
    need_weight = dweight.shape[0] > 0
    partials = np.empty((n_chunks, dweight.shape[0]), dtype=np.float64)
    for chunk in numba.prange(n_chunks):
        _rms_backward_chunk(dy, x, weight, rstd, dx, partials, need_dx, need_weight, chunk)
    _reduce_rms_partials(partials, dweight)


@numba.njit(cache=True, fastmath=_FASTMATH)
def rms_backward_serial(
    dy: Array, x: Array, weight: Array, rstd: Array, dx: Array, dweight: Array, need_dx: bool, n_chunks: int
) -> None:  # pragma: no cover - compiled
    """The same on the calling thread."""
    need_weight = dweight.shape[0] > 0
    partials = np.empty((n_chunks, dweight.shape[0]), dtype=np.float64)
    for chunk in range(n_chunks):
        _rms_backward_chunk(dy, x, weight, rstd, dx, partials, need_dx, need_weight, chunk)
    _reduce_rms_partials(partials, dweight)
