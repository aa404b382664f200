"""When a difference is called real: exact tests, the smallest detectable effect, and Holm's adjustment.

Pure NumPy and the standard library (no torch), shared by timing (paired per-round ratios) and by
the next-token loss (paired windows).

- :func:`median_ci` and :func:`sign_test_p`: the distribution-free CI of a median from order
  statistics, and the exact two-sided sign test it inverts. For paired timings of two arms that do
  the same work, the per-round log ratio is symmetric about zero whatever the noise looks like (the
  two arms are exchangeable within a round), so the test's false-positive rate is at most
  ``1 - CONFIDENCE`` exactly, not only asymptotically.
- :func:`detectable_effect`: the smallest shift that a CI of this width finds with probability
  ``DETECTION_POWER``: ``(z_(1-alpha/2) + z_power) * SE`` with ``SE`` the CI's half-width over
  ``z_(1-alpha/2)``. "Not significant" then reads "below X".
- :func:`holm`: Holm's step-down adjustment of a family of p-values (family-wise error at most
  alpha), so that six variants or twelve swept points together are wrong at most 5% of the time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
DETECTION_POWER = 0.80  # the smallest detectable effect is found this often
Z_CI = NormalDist().inv_cdf(1.0 - ALPHA / 2.0)  # 1.96
Z_POWER = NormalDist().inv_cdf(DETECTION_POWER)  # 0.84


def _binomial_half_cdf(n: int) -> np.ndarray:
    """P(X <= k) for X ~ Binomial(n, 1/2), k = 0..n, in float64 (log-space, no overflow)."""
    k = np.arange(n + 1)
    log_pmf = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in k])
        - n * math.log(2.0)
    )
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def _order_rank(n: int, confidence: float) -> int:
    """The largest k with P(X <= k - 1) <= (1 - confidence) / 2, X ~ Binomial(n, 1/2); 0 if none."""
    if n == 0:
        return 0
    cdf = _binomial_half_cdf(n)
    return int(np.searchsorted(cdf, (1.0 - confidence) / 2.0, side="right"))


def median_ci(values: np.ndarray | Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free CI of the median: the k-th smallest and k-th largest values.

    Coverage is at least ``confidence`` for independent draws of any continuous distribution. With
    fewer than 6 values no such k exists at 95%; the CI is then the whole range (and
    :func:`sign_test_p` cannot go below 0.0625).
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = ordered.size
    if n == 0:
        return math.nan, math.nan
    k = max(1, _order_rank(n, confidence))
    return float(ordered[k - 1]), float(ordered[n - k])


def sign_test_p(values: np.ndarray | Sequence[float]) -> float:
    """Exact two-sided p-value of the sign test of "median 0" (zeros dropped); 1.0 without data."""
    array = np.asarray(values, dtype=np.float64)
    positive, negative = int((array > 0).sum()), int((array < 0).sum())
    n = positive + negative
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * _binomial_half_cdf(n)[min(positive, negative)]))


def bootstrap_p(statistics: np.ndarray) -> float:
    """Two-sided p-value of "the statistic is 0" from its bootstrap distribution (the percentile CI's
    dual: p <= alpha where that CI excludes 0); at least 1 / resamples."""
    if statistics.size == 0:
        return 1.0
    below, above = float((statistics <= 0).mean()), float((statistics >= 0).mean())
    return float(min(1.0, max(2.0 * min(below, above), 1.0 / statistics.size)))


def detectable_effect(ci_low: float, ci_high: float) -> float:
    """The smallest shift a CI of this width finds with probability DETECTION_POWER (same units)."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return math.nan
    standard_error = (ci_high - ci_low) / 2.0 / Z_CI
    return (Z_CI + Z_POWER) * standard_error


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order: reject where the adjusted p is at most alpha.

    The i-th smallest p (1-based) is multiplied by ``m - i + 1``, then made non-decreasing.
    """
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired_t(differences: np.ndarray | Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """The paired t-test of "mean difference 0" over independent replicates (seeds), and its CI.

    Returns ``mean``, ``ci_low`` / ``ci_high`` (the ``confidence`` t-interval), ``p_value`` (two-sided;
    1.0 when every difference is 0, NaN with fewer than 2 values) and ``detectable``: the smallest
    mean difference these replicates find with probability DETECTION_POWER,
    ``(t_(1-alpha/2) + t_power) * sd / sqrt(n)`` on n - 1 degrees of freedom. SciPy's t distribution
    (``scipy.special``: a fraction of ``scipy.stats``' import time).
    """
    from scipy.special import stdtr, stdtrit

    values = np.asarray(differences, dtype=np.float64)
    n = values.size
    mean = float(values.mean()) if n else math.nan
    if n < 2 or not np.isfinite(values).all():
        return {
            "mean": mean,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": math.nan,
            "detectable": math.nan,
        }
    standard_error = float(values.std(ddof=1)) / math.sqrt(n)
    t_ci = float(stdtrit(n - 1, 0.5 + confidence / 2.0))
    t_power = float(stdtrit(n - 1, DETECTION_POWER))
    if standard_error == 0.0:
        p_value = 1.0 if mean == 0.0 else 0.0
    else:
        p_value = float(2.0 * stdtr(n - 1, -abs(mean) / standard_error))
    return {
        "mean": mean,
        "ci_low": mean - t_ci * standard_error,
        "ci_high": mean + t_ci * standard_error,
        "p_value": p_value,
        "detectable": (t_ci + t_power) * standard_error,
    }
