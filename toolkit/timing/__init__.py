"""How anything in the toolkit is timed.

- ``stats``: pure NumPy (importing it never imports torch): the one :class:`Measurement` type,
  bootstrap CIs, paired differences, :class:`Comparison`, and :class:`Caution` (data, worded by
  ``toolkit.tables.timing``).
- ``machine``: the allocator (glibc kept from returning freed memory, so repeated calls stop paying
  page faults), the load of other processes while timing, and the context of a measurement.
- ``engine``: :func:`measure` (one callable) and :func:`compare` (several, interleaved, with an
  A/A control giving the run's noise floor).

The names are imported lazily, so that the process pool of ``toolkit matmul`` can use ``stats``
without importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.timing.engine import compare, measure
    from toolkit.timing.machine import capture_context, configure_allocator
    from toolkit.timing.stats import (
        CONFIDENCE,
        WIDE_IQR,
        Caution,
        Comparison,
        Difference,
        Measurement,
        TimingContext,
        aa_name,
        bootstrap_ci,
        paired_difference,
    )

_HOMES = {
    "compare": "engine",
    "measure": "engine",
    "capture_context": "machine",
    "configure_allocator": "machine",
    "CONFIDENCE": "stats",
    "WIDE_IQR": "stats",
    "Caution": "stats",
    "Comparison": "stats",
    "Difference": "stats",
    "Measurement": "stats",
    "TimingContext": "stats",
    "aa_name": "stats",
    "bootstrap_ci": "stats",
    "paired_difference": "stats",
}

__all__ = [
    "CONFIDENCE",
    "WIDE_IQR",
    "Caution",
    "Comparison",
    "Difference",
    "Measurement",
    "TimingContext",
    "aa_name",
    "bootstrap_ci",
    "capture_context",
    "compare",
    "configure_allocator",
    "measure",
    "paired_difference",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"toolkit.timing.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'toolkit.timing' has no attribute {name!r}")
