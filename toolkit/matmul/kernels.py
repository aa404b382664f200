"""The kernels that multiply one block: the naive triple loop in pure Python, and NumPy (BLAS).

The naive loop is the plain, non-parallel reference that verification trusts when it is affordable
(Python's integers are exact, its floats are IEEE doubles summed left to right), and the
naive-kernel workload that shows the parallel speed-up of the algorithm itself, without BLAS.
"""

from __future__ import annotations

import numpy as np

from toolkit.matmul.plans import Kernel

NAIVE_REFERENCE_MAX_MULTIPLY_ADDS = 2**22
"""Up to this many multiply-adds (about 160³) the naive loop is the verification reference."""


def naive_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` by ``C[i][j] = Σ_p A[i][p]·B[p][j]``, summed for p = 0, 1, … in Python arithmetic.

    Integers are exact (Python integers do not overflow; the result must fit the dtype); float32
    inputs are multiplied and summed in double precision and rounded once at the end.
    """
    n, k = a.shape
    k_b, m = b.shape
    if k != k_b:
        raise ValueError(f"shapes {a.shape} and {b.shape} cannot be multiplied")
    rows = a.tolist()
    columns = b.T.tolist()
    out = []
    for i in range(n):
        row = rows[i]
        out_row = []
        for j in range(m):
            column = columns[j]
            total = 0
            for p in range(k):
                total += row[p] * column[p]
            out_row.append(total)
        out.append(out_row)
    return np.array(out, dtype=np.result_type(a, b)).reshape(n, m)


def naive_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """The naive product as a plan kernel."""
    out[...] = naive_matmul(a, b)


def blas_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """NumPy's product (BLAS for floats) written straight into ``out``, which may be a strided view."""
    np.matmul(a, b, out=out)


KERNELS: dict[str, Kernel] = {"blas": blas_kernel, "naive": naive_kernel}
