"""Fitting latency trends: least-squares lines, the quadratic for sequence length, the log-log exponent,
and how much one parameter drives the latency of the default config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Trend:
    """Least-squares fits of median latency (ms) against the swept value x."""

    intercept_ms: float  # a in a + b·x
    slope_ms: float  # b: ms per unit of x
    r2_linear: float
    exponent: float  # k in latency ∝ x^k (log-log fit)
    r2_loglog: float
    quadratic: tuple[float, float, float] | None = None  # (a, b, c) of a + b·x + c·x², seq-len only
    r2_quadratic: float | None = None
    quadratic_share: float | None = None  # c·x0² / latency(x0) at the default length x0
    loglog_scale_ms: float = math.nan  # A in latency ≈ A·x^k (the log-log fit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "intercept_ms": self.intercept_ms,
            "slope_ms_per_unit": self.slope_ms,
            "r2_linear": self.r2_linear,
            "loglog_exponent": self.exponent,
            "r2_loglog": self.r2_loglog,
            "loglog_scale_ms": self.loglog_scale_ms,
            "quadratic": list(self.quadratic) if self.quadratic is not None else None,
            "r2_quadratic": self.r2_quadratic,
            "quadratic_share_at_default": self.quadratic_share,
        }


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - fitted) ** 2)) / total if total > 0 else math.nan


def fit_trend(x: Sequence[float], y_ms: Sequence[float], quadratic_at: float | None = None) -> Trend:
    """Fit a + b·x and the log-log exponent; with ``quadratic_at`` also a + b·x + c·x² and c's share there."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y_ms, dtype=np.float64)
    if xs.size < 2:
        return Trend(math.nan, math.nan, math.nan, math.nan, math.nan)
    slope, intercept = np.polyfit(xs, ys, 1)
    exponent, log_a = np.polyfit(np.log(xs), np.log(ys), 1)
    trend = Trend(
        intercept_ms=float(intercept),
        slope_ms=float(slope),
        r2_linear=_r2(ys, intercept + slope * xs),
        exponent=float(exponent),
        r2_loglog=_r2(np.log(ys), log_a + exponent * np.log(xs)),
        loglog_scale_ms=float(np.exp(log_a)),
    )
    if quadratic_at is not None and xs.size >= 3:
        c, b, a = np.polyfit(xs, ys, 2)
        trend.quadratic = (float(a), float(b), float(c))
        trend.r2_quadratic = _r2(ys, a + b * xs + c * xs**2)
        at = a + b * quadratic_at + c * quadratic_at**2
        trend.quadratic_share = float(c * quadratic_at**2 / at) if at > 0 else math.nan
    return trend


@dataclass
class Influence:
    """How much one parameter matters around the default config (from its sweep's linear fit)."""

    vary: str
    default_value: int
    slope_ms: float  # ms per unit at the default value
    default_ms: float  # the fit's latency at the default value
    share: float  # (T(default) - T(0)) / T(default): the part of the latency this parameter drives
    exponent: float
    r2: float
    fit: str  # "linear", or "quadratic" for seq-len

    def to_dict(self) -> dict[str, Any]:
        return {
            "vary": self.vary,
            "default_value": self.default_value,
            "slope_ms_per_unit": self.slope_ms,
            "default_ms": self.default_ms,
            "share_of_default_latency": self.share,
            "loglog_exponent": self.exponent,
            "fit": self.fit,
            "r2": self.r2,
        }


def influence_of(vary: str, default_value: int, trend: Trend) -> Influence:
    """How much the swept parameter drives the default config's latency, from the fit of its sweep.

    The fit T(x) is linear, or quadratic for sequence length. The share is (T(x0) - T(0)) / T(x0) at
    the default x0: the part of the latency that would go if the parameter went to zero; the slope
    is dT/dx at x0 in ms per unit.
    """
    x0 = float(default_value)
    if trend.quadratic is not None:
        a, b, c = trend.quadratic
        slope, intercept = b + 2.0 * c * x0, a
        at_default = a + b * x0 + c * x0**2
        r2 = trend.r2_quadratic if trend.r2_quadratic is not None else math.nan
    else:
        slope, intercept = trend.slope_ms, trend.intercept_ms
        at_default = intercept + slope * x0
        r2 = trend.r2_linear
    return Influence(
        vary=vary,
        default_value=default_value,
        slope_ms=slope,
        default_ms=at_default,
        share=(at_default - intercept) / at_default if at_default > 0 else math.nan,
        exponent=trend.exponent,
        r2=r2,
        fit="quadratic" if trend.quadratic is not None else "linear",
    )
