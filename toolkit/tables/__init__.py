"""Rich tables built from study results: the only place that builds tables (one module per study).

Shared cell formatting lives here so that every table prints numbers the same way.
"""

from __future__ import annotations

import math


def fmt_int(value: int) -> str:
    return f"{value:,}"


def fmt_float(value: float, digits: int = 3) -> str:
    """Significant-digit formatting that stays readable from 1e-9 to 1e9."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:,.{max(digits - 1 - math.floor(math.log10(magnitude)), 0)}f}"


def nats_text(value: float, signed: bool = False) -> str:
    """A loss or loss difference in nats: four decimals, or three significant digits below 0.001 nats
    (never a misleading 0.0000); a dash when not finite."""
    if not math.isfinite(value):
        return "—"
    sign = "+" if signed else ""
    if value != 0 and abs(value) < 1e-3:
        return f"{value:{sign}.2e}"
    return f"{value:{sign}.4f}"


def fmt_bytes(n_bytes: float) -> str:
    """Both units people quote: decimal MB and binary MiB."""
    return f"{n_bytes / 1e6:,.2f} MB / {n_bytes / 2**20:,.2f} MiB"
