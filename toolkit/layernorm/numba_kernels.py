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

Rows are handled in chunks (the parallel drivers spread the chunks over the thread pool with
``prange``; the serial ones, for small inputs where waking the pool costs more than the work, run them
in turn). Within a chunk the rows are software-pipelined: the first pass over row i + 1 (its sum, or
its gradient sums) runs in the same loop as the last pass over row i (writing y or dx), so that the
next row's loads from memory overlap this row's arithmetic instead of waiting behind it. That, and
inlining the per-chunk helpers into the drivers (``inline="always"``: a called helper does not
vectorise as well), took the forward kernel at 4096×256 from about 180 µs to about 120 µs on 2 cores.

The first call of each signature compiles (a few seconds); ``cache=True`` keeps the machine code in
``__pycache__`` for later processes.
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


def _pool_threads(n_elements: int, threads: int) -> int:
    """The threads a call of ``n_elements`` runs on (torch's setting, capped by Numba's pool, which is
    set to that many), or 0 for a serial call: waking the thread pool costs more than small work."""
    threads = min(threads, int(numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if threads < 2 or n_elements < PARALLEL_MIN_ELEMENTS:
        return 0
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
    return threads


def use_threads(n_elements: int, threads: int) -> bool:
    """Whether to run on ``threads`` threads (torch's setting, capped by Numba's pool), or serially.

    Small calls run serially: waking the thread pool costs more than their work.
    """
    return _pool_threads(n_elements, threads) > 0


def chunk_count(n_rows: int, threads: int | None = None) -> int:
    """Row chunks on ``threads`` threads (default: Numba's current setting): at most ROWS_PER_CHUNK
    rows each, and a few per thread."""
    threads = numba.get_num_threads() if threads is None else threads
    return max(1, min(n_rows, 4 * threads), math.ceil(n_rows / ROWS_PER_CHUNK))


def launch_plan(n_rows: int, n_elements: int, threads: int) -> tuple[bool, int]:
    """Whether a call runs on the thread pool (see ``use_threads``), and in how many row chunks.

    Serial calls still use chunks of at most ROWS_PER_CHUNK rows: the backward's weight and bias
    gradients are summed per chunk and the chunks' sums added in float64.
    """
    pool = _pool_threads(n_elements, threads)
    if not pool:
        return False, max(1, math.ceil(n_rows / ROWS_PER_CHUNK))
    return True, chunk_count(n_rows, pool)


@numba.njit(cache=True, inline="always")
def _chunk_rows(n_rows: int, n_chunks: int, chunk: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """The rows [first, end) of chunk ``chunk`` of ``n_chunks``."""
    rows = (n_rows + n_chunks - 1) // n_chunks
    return chunk * rows, min(n_rows, (chunk + 1) * rows)


# --------------------------------------------------------------------------------------------------
# LayerNorm: y = (x - mean) * rstd * weight + bias


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _row_mean(x: Array, mean: Array, i: int) -> None:  # pragma: no cover - compiled
    """mean[i], as x[i, 0] + mean(x[i] - x[i, 0]): a large common offset does not eat the sum's precision."""
    N = x.shape[1]
    shift = x[i, 0]
    mean[i] = 0.0
    total = mean[i]  # a zero of the compute dtype
    for j in range(N):
        total += x[i, j] - shift
    mean[i] = shift + total / N


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _row_rstd(
    x: Array, mean: Array, rstd: Array, eps: float, divisor: int, i: int
) -> None:  # pragma: no cover - compiled
    """rstd[i] = 1 / sqrt(sum((x[i] - mean[i])²) / divisor + eps): the centred sum, never E[x²] − E[x]²."""
    N = x.shape[1]
    mu = mean[i]
    rstd[i] = 0.0
    squares = rstd[i]
    for j in range(N):
        centred = x[i, j] - mu
        squares += centred * centred
    rstd[i] = 1.0 / np.sqrt(squares / divisor + eps)


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _forward_chunk(
    x: Array,
    weight: Array,
    bias: Array,
    y: Array,
    mean: Array,
    rstd: Array,
    eps: float,
    divisor: int,
    first: int,
    end: int,
) -> None:  # pragma: no cover - compiled
    """Rows [first, end): mean, rstd and y = (x - mean) * rstd * weight + bias, the next row's sum
    computed in the loop that writes this row's y."""
    N = x.shape[1]
    if first >= end:
        return
    _row_mean(x, mean, first)
    for i in range(first, end):
        _row_rstd(x, mean, rstd, eps, divisor, i)
        mu = mean[i]  # read back: in the compute dtype
        r = rstd[i]
        if i + 1 == end:
            for j in range(N):
                y[i, j] = (x[i, j] - mu) * r * weight[j] + bias[j]
            continue
        shift = x[i + 1, 0]
        mean[i + 1] = 0.0
        total = mean[i + 1]
        for j in range(N):
            y[i, j] = (x[i, j] - mu) * r * weight[j] + bias[j]
            total += x[i + 1, j] - shift
        mean[i + 1] = shift + total / N


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def forward_parallel(
    x: Array,
    weight: Array,
    bias: Array,
    y: Array,
    mean: Array,
    rstd: Array,
    eps: float,
    divisor: int,
    n_chunks: int,
) -> None:  # pragma: no cover - compiled
    """Normalise every row of x (M, N) into y, ``n_chunks`` row chunks spread over the thread pool."""
    for chunk in numba.prange(n_chunks):
        first, end = _chunk_rows(x.shape[0], n_chunks, chunk)
        _forward_chunk(x, weight, bias, y, mean, rstd, eps, divisor, first, end)


@numba.njit(cache=True, fastmath=_FASTMATH)
def forward_serial(
    x: Array,
    weight: Array,
    bias: Array,
    y: Array,
    mean: Array,
    rstd: Array,
    eps: float,
    divisor: int,
    n_chunks: int,
) -> None:  # pragma: no cover - compiled
    """The same on the calling thread."""
    for chunk in range(n_chunks):
        first, end = _chunk_rows(x.shape[0], n_chunks, chunk)
        _forward_chunk(x, weight, bias, y, mean, rstd, eps, divisor, first, end)


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _backward_rows(
    dy: Array,
    x: Array,
    weight: Array,
    mean: Array,
    rstd: Array,
    dx: Array,
    partials: Array,
    scratch: Array,
    need_params: bool,
    chunk: int,
    i: int,
    k: int,
) -> None:  # pragma: no cover - compiled
    """One loop over a row: dx of row i (when i >= 0) from the row constants in ``scratch[3]``,
    ``scratch[4]``; and (when k >= 0) row k's sums of g = dy * weight and g * xhat into ``scratch[1]``,
    ``scratch[2]``, with, when ``need_params``, dy * xhat and dy added to the chunk's partials.

    Each case is its own loop. Written as one loop with loop-invariant branches, the compiler did not
    vectorise every case: dx alone (no weight or bias gradient) ran 3-7x slower than dx with them.
    """
    N = x.shape[1]
    zero = scratch[0]
    sum_g = zero
    sum_g_xhat = zero
    mean_g = scratch[3]
    projection = scratch[4]
    mu = mean[max(i, 0)]
    r = rstd[max(i, 0)]
    mu_k = mean[max(k, 0)]
    r_k = rstd[max(k, 0)]
    if i >= 0 and k >= 0 and need_params:
        for j in range(N):
            dx[i, j] = r * (dy[i, j] * weight[j] - mean_g - (x[i, j] - mu) * r * projection)
            xhat = (x[k, j] - mu_k) * r_k
            grad = dy[k, j]
            partials[0, chunk, j] += grad * xhat
            partials[1, chunk, j] += grad
            g = grad * weight[j]
            sum_g += g
            sum_g_xhat += g * xhat
    elif i >= 0 and k >= 0:
        for j in range(N):
            dx[i, j] = r * (dy[i, j] * weight[j] - mean_g - (x[i, j] - mu) * r * projection)
            xhat = (x[k, j] - mu_k) * r_k
            g = dy[k, j] * weight[j]
            sum_g += g
            sum_g_xhat += g * xhat
    elif i >= 0:
        for j in range(N):
            dx[i, j] = r * (dy[i, j] * weight[j] - mean_g - (x[i, j] - mu) * r * projection)
    elif k >= 0 and need_params:
        for j in range(N):
            xhat = (x[k, j] - mu_k) * r_k
            grad = dy[k, j]
            partials[0, chunk, j] += grad * xhat
            partials[1, chunk, j] += grad
            g = grad * weight[j]
            sum_g += g
            sum_g_xhat += g * xhat
    elif k >= 0:
        for j in range(N):
            xhat = (x[k, j] - mu_k) * r_k
            g = dy[k, j] * weight[j]
            sum_g += g
            sum_g_xhat += g * xhat
    scratch[1] = sum_g
    scratch[2] = sum_g_xhat


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
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
    The next row's sums are taken in the loop that writes this row's dx.
    """
    M, N = x.shape
    first, end = _chunk_rows(M, partials.shape[1], chunk)
    scratch = np.zeros(5, dtype=mean.dtype)  # a zero, a row's two sums, its two constants
    if need_params:
        for j in range(N):
            partials[0, chunk, j] = 0.0
            partials[1, chunk, j] = 0.0
    if first >= end:
        return
    _backward_rows(dy, x, weight, mean, rstd, dx, partials, scratch, need_params, chunk, -1, first)
    for i in range(first, end):
        scratch[3] = scratch[1] / N  # mean(g), in the compute dtype
        scratch[4] = scratch[2] / divisor  # sum(g * xhat) / divisor
        _backward_rows(
            dy,
            x,
            weight,
            mean,
            rstd,
            dx,
            partials,
            scratch,
            need_params,
            chunk,
            i if need_dx else -1,
            i + 1 if i + 1 < end else -1,
        )


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


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _rms_forward_chunk(
    x: Array, weight: Array, y: Array, rstd: Array, eps: float, first: int, end: int
) -> None:  # pragma: no cover - compiled
    """Rows [first, end): rstd = 1 / sqrt(mean(x²) + eps) and y = x * rstd * weight, the next row's sum
    of squares taken in the loop that writes this row's y."""
    N = x.shape[1]
    if first >= end:
        return
    rstd[first] = 0.0
    squares = rstd[first]  # a zero of the compute dtype
    for j in range(N):
        squares += x[first, j] * x[first, j]
    for i in range(first, end):
        rstd[i] = 1.0 / np.sqrt(squares / N + eps)
        r = rstd[i]  # read back: in the compute dtype
        if i + 1 == end:
            for j in range(N):
                y[i, j] = x[i, j] * r * weight[j]
            continue
        rstd[i + 1] = 0.0
        squares = rstd[i + 1]
        for j in range(N):
            y[i, j] = x[i, j] * r * weight[j]
            squares += x[i + 1, j] * x[i + 1, j]


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def rms_forward_parallel(
    x: Array, weight: Array, y: Array, rstd: Array, eps: float, n_chunks: int
) -> None:  # pragma: no cover - compiled
    """RMS-normalise every row of x (M, N) into y, ``n_chunks`` row chunks spread over the thread pool."""
    for chunk in numba.prange(n_chunks):
        first, end = _chunk_rows(x.shape[0], n_chunks, chunk)
        _rms_forward_chunk(x, weight, y, rstd, eps, first, end)


@numba.njit(cache=True, fastmath=_FASTMATH)
def rms_forward_serial(
    x: Array, weight: Array, y: Array, rstd: Array, eps: float, n_chunks: int
) -> None:  # pragma: no cover - compiled
    """The same on the calling thread."""
    for chunk in range(n_chunks):
        first, end = _chunk_rows(x.shape[0], n_chunks, chunk)
        _rms_forward_chunk(x, weight, y, rstd, eps, first, end)


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _rms_backward_rows(
    dy: Array,
    x: Array,
    weight: Array,
    rstd: Array,
    dx: Array,
    partials: Array,
    scratch: Array,
    need_weight: bool,
    chunk: int,
    i: int,
    k: int,
) -> None:  # pragma: no cover - compiled
    """One loop over a row: dx of row i (when i >= 0) from its constant in ``scratch[2]``; and (when
    k >= 0) row k's sum of g * xhat (g = dy * weight, xhat = x * rstd) into ``scratch[1]``, with, when
    ``need_weight``, dy * xhat added to the chunk's partials. Each case is its own loop (see
    ``_backward_rows``)."""
    N = x.shape[1]
    sum_g_xhat = scratch[0]
    projection = scratch[2]
    r = rstd[max(i, 0)]
    r_k = rstd[max(k, 0)]
    if i >= 0 and k >= 0 and need_weight:
        for j in range(N):
            dx[i, j] = r * (dy[i, j] * weight[j] - x[i, j] * r * projection)
            xhat = x[k, j] * r_k
            grad = dy[k, j]
            partials[chunk, j] += grad * xhat
            sum_g_xhat += grad * weight[j] * xhat
    elif i >= 0 and k >= 0:
        for j in range(N):
            dx[i, j] = r * (dy[i, j] * weight[j] - x[i, j] * r * projection)
            sum_g_xhat += dy[k, j] * weight[j] * x[k, j] * r_k
    elif i >= 0:
        for j in range(N):
            dx[i, j] = r * (dy[i, j] * weight[j] - x[i, j] * r * projection)
    elif k >= 0 and need_weight:
        for j in range(N):
            xhat = x[k, j] * r_k
            grad = dy[k, j]
            partials[chunk, j] += grad * xhat
            sum_g_xhat += grad * weight[j] * xhat
    elif k >= 0:
        for j in range(N):
            sum_g_xhat += dy[k, j] * weight[j] * x[k, j] * r_k
    scratch[1] = sum_g_xhat


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
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
    rows; with ``need_weight``, their sum of dy * xhat into ``partials[chunk]`` (partials: (n, N)).
    The next row's sum is taken in the loop that writes this row's dx."""
    M, N = x.shape
    first, end = _chunk_rows(M, partials.shape[0], chunk)
    scratch = np.zeros(3, dtype=rstd.dtype)  # a zero, a row's sum, its constant
    if need_weight:
        for j in range(N):
            partials[chunk, j] = 0.0
    if first >= end:
        return
    _rms_backward_rows(dy, x, weight, rstd, dx, partials, scratch, need_weight, chunk, -1, first)
    for i in range(first, end):
        scratch[2] = scratch[1] / N  # sum(g * xhat) / N, in the compute dtype
        _rms_backward_rows(
            dy,
            x,
            weight,
            rstd,
            dx,
            partials,
            scratch,
            need_weight,
            chunk,
            i if need_dx else -1,
            i + 1 if i + 1 < end else -1,
        )


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
