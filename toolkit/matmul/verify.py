"""Is the parallel C right? Exact for integers, within the rounding bound for floats, and Freivalds.

Floats: a product computed in any summation order satisfies |Ĉ - AB| ≤ γ_K·|A|·|B| elementwise,
with γ_K = K·u / (1 - K·u) and u the unit roundoff (Higham, *Accuracy and Stability of Numerical
Algorithms*, §3.5). The parallel result and the reference both satisfy it, so they may differ by up
to twice that; an absolute 2·K·η (η the smallest subnormal) covers underflow. The verdict is
elementwise: every |C_par - C_ref| must be within its own bound.

Integers: bit-identical, after refusing inputs whose product could overflow int64 (NumPy wraps
silently, and so would every block).

Freivalds: for random R, A·(B·R) must equal C·R. That costs O(n²) per column of R instead of the
O(n³) of a second product: integers exactly (random 0/1 vectors; a wrong C slips through one vector
with probability ≤ 1/2, even modulo 2⁶⁴), floats within a bound derived like the one above.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from toolkit.errors import InputError

FREIVALDS_ROUNDS = 20
CHUNK_ROWS = 256
INT64_MAX = float(2**63 - 1)


@dataclass(frozen=True)
class FreivaldsCheck:
    """A·(B·R) against C·R for ``rounds`` random columns of R."""

    rounds: int
    passed: bool
    worst_ratio: float  # largest |A(BR) - CR| / tolerance (integers: 0 when equal, inf when not)
    miss_probability: float  # chance that a wrong C passes: ≤ 2^-rounds for integers, ~0 for floats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    """The parallel C against a plain non-parallel product of the same inputs."""

    reference: str  # what computed it: "the naive triple loop" or "NumPy's matmul (1 thread)"
    exact: bool  # integers: the comparison was for bit-identity
    correct: bool
    max_abs_err: float
    bound: float  # the largest elementwise bound (0 for integers)
    worst_ratio: float  # largest |error| / its own bound; ≤ 1 is correct (integers: 0 or inf)
    mismatches: int  # elements beyond their bound (integers: not identical)
    freivalds: FreivaldsCheck | None = None

    @property
    def verdict(self) -> str:
        if self.exact:
            return "bit-identical" if self.correct else f"WRONG: {self.mismatches:,} elements differ"
        if self.correct:
            return "within rounding bound"
        return f"WRONG: {self.mismatches:,} elements beyond the rounding bound"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        out["freivalds"] = self.freivalds.to_dict() if self.freivalds is not None else None
        return out


def unit_roundoff(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).eps) / 2.0


def gamma(n: int, u: float) -> float:
    """γ_n = n·u / (1 - n·u): the relative error bound of n roundings (infinite once n·u ≥ 1)."""
    return n * u / (1.0 - n * u) if n * u < 1.0 else math.inf


def check_representable(a: np.ndarray, b: np.ndarray) -> None:
    """Refuse inputs whose product could overflow the dtype (and non-finite floats).

    The bound is max_ij Σ_k |A_ik·B_kj|, which also bounds every partial sum in any order. It is
    first bounded cheaply by |A|·max_j|B_kj| (a matrix-vector product); only when that is too large
    is the exact |A|·|B| computed.
    """
    dtype = np.result_type(a, b)
    if dtype.kind == "f":
        for name, x in (("A", a), ("B", b)):
            if not np.isfinite(x).all():
                raise InputError(
                    f"{name} contains NaN or infinity; the product is only checked for finite inputs"
                )
        limit = float(np.finfo(dtype).max)
    else:
        limit = INT64_MAX
    k = a.shape[1]
    margin = 1.0 + (k + 2) * 2.0**-52  # float64 rounding of the bound itself
    abs_a = np.abs(a, dtype=np.float64)
    row_max_b = np.abs(b, dtype=np.float64).max(axis=1)
    with np.errstate(over="ignore"):  # an infinite bound is simply too large
        if float((abs_a @ row_max_b).max(initial=0.0)) * margin < limit:
            return
        worst = float((abs_a @ np.abs(b, dtype=np.float64)).max(initial=0.0)) * margin
    if worst < limit:
        return
    if dtype.kind == "f":
        raise InputError(
            f"the {dtype} product could overflow: max Σ|A·B| ≈ {worst:.3g} > {limit:.3g}; "
            "scale the inputs down"
        )
    raise InputError(
        f"the int64 product could overflow: max_ij Σ_k |A_ik·B_kj| ≈ {worst:.3g} > 2^63-1 ≈ 9.22e18 "
        "(NumPy would wrap around silently); use smaller values, or {setting('dtype')} float64"
    )


def compare_exact(c: np.ndarray, reference: np.ndarray, reference_name: str) -> Verification:
    """Integers: bit-identical or not."""
    unequal = int(np.count_nonzero(c != reference))
    max_err = 0.0
    if unequal:
        max_err = float(np.abs(c.astype(np.float64) - reference.astype(np.float64)).max())
    return Verification(
        reference=reference_name,
        exact=True,
        correct=unequal == 0,
        max_abs_err=max_err,
        bound=0.0,
        worst_ratio=0.0 if unequal == 0 else math.inf,
        mismatches=unequal,
    )


def compare_to_bound(
    c: np.ndarray, reference: np.ndarray, absolute: np.ndarray, k: int, reference_name: str
) -> Verification:
    """Floats: |C - C_ref| ≤ 2·γ_K·|A||B| + 2·K·η elementwise; ``absolute`` is float64 |A|·|B|."""
    dtype = c.dtype
    scale = 2.0 * gamma(k, unit_roundoff(dtype))
    scale /= 1.0 - gamma(
        k, unit_roundoff(np.dtype(np.float64))
    )  # |A||B| was itself rounded, downward at most
    underflow = 2.0 * k * float(np.finfo(dtype).smallest_subnormal)
    max_err = max_bound = worst = 0.0
    beyond = 0
    for start in range(0, c.shape[0], CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        error = np.abs(c[rows].astype(np.float64) - reference[rows].astype(np.float64))
        bound = absolute[rows] * scale + underflow
        max_err = max(max_err, float(error.max(initial=0.0)))
        max_bound = max(max_bound, float(bound.max(initial=0.0)))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(error == 0.0, 0.0, error / bound)
        worst = max(worst, float(np.nan_to_num(ratio, nan=math.inf).max(initial=0.0)))
        beyond += int(np.count_nonzero(~(error <= bound)))
    return Verification(
        reference=reference_name,
        exact=False,
        correct=beyond == 0,
        max_abs_err=max_err,
        bound=max_bound,
        worst_ratio=worst,
        mismatches=beyond,
    )


def freivalds(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, rounds: int = FREIVALDS_ROUNDS, seed: int = 0
) -> FreivaldsCheck:
    """Freivalds' check of C = A·B with ``rounds`` random vectors, in O((NK + KM + NM)·rounds)."""
    rng = np.random.default_rng(seed)
    k, m = b.shape
    if c.dtype.kind in "iu":
        # int64 arithmetic wraps: the check holds modulo 2^64, where a 0/1 vector still catches a
        # wrong C with probability ≥ 1/2 per round.
        bits = rng.integers(0, 2, size=(m, rounds), dtype=np.int64)
        equal = bool(np.array_equal(a @ (b @ bits), c @ bits))
        return FreivaldsCheck(rounds, equal, 0.0 if equal else math.inf, 2.0**-rounds)
    r = rng.standard_normal((m, rounds))
    a64, b64, c64 = (x.astype(np.float64, copy=False) for x in (a, b, c))
    residual = np.abs(a64 @ (b64 @ r) - c64 @ r)
    u64 = unit_roundoff(np.dtype(np.float64))
    g_k, g_m, g_k64 = gamma(k, unit_roundoff(c.dtype)), gamma(m, u64), gamma(k, u64)
    size = np.abs(a64) @ (np.abs(b64) @ np.abs(r))  # |A||B||R|
    size /= 1.0 - gamma(k + m, u64)
    tolerance = (g_k + g_k64 * (1.0 + g_m) + g_m) * size + g_m * (np.abs(c64) @ np.abs(r)) / (1.0 - g_m)
    tolerance += 4.0 * (k + m) * float(np.finfo(c.dtype).smallest_subnormal)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(residual == 0.0, 0.0, residual / tolerance)
    worst = float(np.nan_to_num(ratio, nan=math.inf).max(initial=0.0))
    return FreivaldsCheck(rounds, worst <= 1.0, worst, 0.0)
