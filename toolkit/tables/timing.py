"""The wording of timing results: cautions (:class:`toolkit.timing.stats.Caution`) and stop reasons.

Quantities a user can change are marked with :func:`toolkit.errors.setting`; the CLI names them by
their flags when it prints a note.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from toolkit.errors import setting
from toolkit.timing.stats import ARMS_DIFFER, BUSY, WIDE_CI, WIDE_SPREAD, Caution


def caution_text(caution: Caution, threads: int | None = None) -> str:
    """One sentence for a caution; ``threads``: torch's CPU threads, for the busy-machine hint."""
    prefix = f"{caution.subject}: " if caution.subject else ""
    if caution.kind == WIDE_SPREAD:
        return (
            f"{prefix}IQR is {caution.value:.0%} of the median: calls vary a lot; "
            f"close other programs or raise {setting('budget_s')}"
        )
    if caution.kind == WIDE_CI:
        return (
            f"{prefix}the median's 95% CI is ±{caution.value:.1%}, wider than the ±{caution.limit:.1%} "
            f"target; raise {setting('budget_s')} for a tighter estimate"
        )
    if caution.kind == BUSY:
        return busy_text(caution.value, threads)
    if caution.kind == ARMS_DIFFER:
        return (
            f"the A/A control differs from the baseline by {caution.value:+.2f}% "
            f"(CI {caution.low:+.2f}%..{caution.high:+.2f}%): arms are not exchangeable, "
            "e.g. the order of calls matters; treat small differences with caution"
        )
    return f"{prefix}{caution.kind}: {caution.value:g} (limit {caution.limit:g})"


def busy_text(share: float, threads: int | None = None) -> str:
    hint = ""
    if threads is not None and threads >= (os.cpu_count() or 1) > 1:
        hint = (
            f"; torch uses all {threads} cores, so each call also waits for threads the OS took away: "
            f"fewer threads (e.g. {setting('threads')} 1) may time more steadily"
        )
    return (
        f"other processes used {share:.0%} of the CPUs while timing, so timings are slow and noisy "
        f"(interleaved comparisons stay fair){hint}"
    )


def cautions_text(cautions: Sequence[Caution], threads: int | None = None) -> list[str]:
    return [caution_text(c, threads) for c in cautions]


def describe_stop(reason: str, target_rel_ci: float) -> str:
    """A sentence for a stop reason."""
    return {
        "target": f"stopped when the median's 95% CI was within ±{target_rel_ci:.1%}",
        "budget": "stopped when the time budget ran out",
        "max_samples": "stopped at the maximum number of samples",
        "given": "samples given, not timed here",
        "interrupted": "stopped early by a signal (SIGINT / SIGTERM)",
        "out_of_memory": "stopped early: an allocation failed (out of memory)",
    }.get(reason, reason)
