"""The statistics of timings, in pure NumPy (no torch): one :class:`Measurement` type for the whole
package, paired differences between interleaved arms, and the cautions a reader should know about.

A :class:`Measurement` keeps its raw samples and its context; median, quartiles, IQR and the
bootstrap CI of the median are derived from the samples. It is complete and immutable when built.
Cautions (:class:`Caution`) are data: a kind, what it is about, a value and the limit it crossed;
``toolkit.tables.timing`` words them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from toolkit.timing.decision import ALPHA, detectable_effect, holm, median_ci, sign_test_p
from toolkit.timing.decision import CONFIDENCE as CONFIDENCE  # re-exported

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
WIDE_IQR = 0.10  # a caution when IQR / median is above this
BUSY_SHARE = 0.10  # a caution when other processes used more than this share of the CPUs while timing

# The kinds of caution.
WIDE_SPREAD = "wide_spread"  # IQR / median above WIDE_IQR
WIDE_CI = "wide_ci"  # the median's CI half-width above the target
BUSY = "busy"  # other processes kept the CPUs busy while timing
ARMS_DIFFER = "arms_differ"  # the A/A control differs from the baseline: arms are not exchangeable


@dataclass(frozen=True)
class Caution:
    """Something about a measurement a reader should know, as data (``toolkit.tables.timing`` words it).

    ``subject`` names the arm or swept value it concerns ("" for the whole run); ``value`` is the
    measured quantity and ``limit`` the bound it crossed; ``low``/``high`` a CI where there is one.
    """

    kind: str
    subject: str = ""
    value: float = math.nan
    limit: float = math.nan
    low: float = math.nan
    high: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TimingContext:
    """Where and how a measurement was taken, so that numbers can be compared across runs.

    Built by :func:`toolkit.timing.machine.capture_context` (or :meth:`capture`) on the machine.
    """

    device_name: str
    dtype: str
    torch_version: str
    threads: int
    batch: int | None
    seq_len: int | None
    allocator: str
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(
        cls, device: Any, dtype: Any, batch: int | None = None, seq_len: int | None = None, **extras: Any
    ) -> TimingContext:
        """The context of a measurement about to be taken on ``device`` in this process."""
        from toolkit.timing.machine import capture_context  # imports torch: only when capturing

        return capture_context(device, dtype, batch=batch, seq_len=seq_len, **extras)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_statistics(
    values: np.ndarray | Sequence[float],
    statistic: Callable[[np.ndarray], np.ndarray] = lambda resamples: np.median(resamples, axis=-1),
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> np.ndarray:
    """``statistic`` (vectorised over the last axis) of ``resamples`` seeded resamples of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n <= 1:
        return np.full(resamples if n else 0, values[0] if n else math.nan)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # bound the index array at ~16 MB
    stats = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        stats[start:stop] = statistic(values[rng.integers(0, n, size=(stop - start, n))])
    return stats


def bootstrap_ci(
    values: np.ndarray | Sequence[float],
    statistic: Callable[[np.ndarray], np.ndarray] = lambda resamples: np.median(resamples, axis=-1),
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` (vectorised over the last axis) of ``values``."""
    return percentile_ci(bootstrap_statistics(values, statistic, resamples, seed), confidence)


def percentile_ci(statistics: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` interval of a statistic's bootstrap distribution (NaN if empty)."""
    if statistics.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(statistics, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class Measurement:
    """Raw per-call times of one callable (ms), how they were taken, and the statistics derived from them.

    ``stop_reason``: "target" (the CI reached the target), "budget" (time ran out), "max_samples",
    or "given" (samples taken elsewhere, e.g. one per round of a process pool).
    """

    samples_ms: tuple[float, ...]
    stop_reason: str = "given"
    page_faults_per_call: float = math.nan
    context: TimingContext | None = None
    calls_per_sample: int = 1  # fast callables are called several times per sample; samples are per call
    target_rel_ci: float = 0.02
    elapsed_s: float = 0.0
    others_cpu_share: float = math.nan  # share of all CPUs that other processes used while timing

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_ms", tuple(float(v) for v in self.samples_ms))

    @property
    def n_samples(self) -> int:
        return len(self.samples_ms)

    @cached_property
    def _array(self) -> np.ndarray:
        return np.asarray(self.samples_ms, dtype=np.float64)

    @cached_property
    def median_ms(self) -> float:
        return float(np.median(self._array)) if self.samples_ms else math.nan

    @cached_property
    def _quartiles(self) -> tuple[float, float]:
        if not self.samples_ms:
            return math.nan, math.nan
        q25, q75 = np.quantile(self._array, [0.25, 0.75])
        return float(q25), float(q75)

    @property
    def q25_ms(self) -> float:
        return self._quartiles[0]

    @property
    def q75_ms(self) -> float:
        return self._quartiles[1]

    @property
    def iqr_ms(self) -> float:
        return self._quartiles[1] - self._quartiles[0]

    @property
    def min_ms(self) -> float:
        return float(self._array.min()) if self.samples_ms else math.nan

    @cached_property
    def _ci(self) -> tuple[float, float]:
        return bootstrap_ci(self._array)

    @property
    def ci_low_ms(self) -> float:
        """Lower end of the 95% bootstrap CI of the median."""
        return self._ci[0]

    @property
    def ci_high_ms(self) -> float:
        return self._ci[1]

    @property
    def rel_ci(self) -> float:
        """Half-width of the median's CI relative to the median (0.02 means ±2%)."""
        return (self.ci_high_ms - self.ci_low_ms) / 2.0 / self.median_ms

    @property
    def rel_iqr(self) -> float:
        return self.iqr_ms / self.median_ms

    def cautions(self, subject: str = "") -> list[Caution]:
        """A wide spread, a CI wider than the target, a busy machine."""
        out = []
        if self.n_samples >= 4 and self.rel_iqr > WIDE_IQR:
            out.append(Caution(WIDE_SPREAD, subject, self.rel_iqr, WIDE_IQR))
        if self.n_samples >= 2 and self.rel_ci > self.target_rel_ci:
            out.append(Caution(WIDE_CI, subject, self.rel_ci, self.target_rel_ci))
        return out + busy_cautions(self.others_cpu_share) if not subject else out

    def statistics(self) -> dict[str, Any]:
        """The derived statistics, flat (the columns of a table row or a JSON row)."""
        return {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "q25_ms": self.q25_ms,
            "q75_ms": self.q75_ms,
            "min_ms": self.min_ms,
            "ci_low_ms": self.ci_low_ms,
            "ci_high_ms": self.ci_high_ms,
            "rel_ci": self.rel_ci,
            "n_samples": self.n_samples,
            "stop_reason": self.stop_reason,
            "page_faults_per_call": self.page_faults_per_call,
        }

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.statistics(),
            "confidence": CONFIDENCE,
            "calls_per_sample": self.calls_per_sample,
            "target_rel_ci": self.target_rel_ci,
            "elapsed_s": self.elapsed_s,
            "others_cpu_share": self.others_cpu_share,
            "warnings": [c.to_dict() for c in self.cautions()],
            "context": self.context.to_dict() if self.context is not None else None,
        }
        if samples:
            out["samples_ms"] = list(self.samples_ms)
        return out


def busy_cautions(share: float) -> list[Caution]:
    """A caution when other processes kept more than BUSY_SHARE of the CPUs busy while timing."""
    return [Caution(BUSY, "", share, BUSY_SHARE)] if share > BUSY_SHARE else []


@dataclass(frozen=True)
class Difference:
    """A variant against the baseline from paired rounds: median of per-round time ratios.

    The CI is the distribution-free CI of the median log ratio (order statistics) and ``p_value``
    the exact sign test it inverts. ``significant_raw``: this comparison alone (p <= alpha, the CI
    excludes zero); ``significant``: the verdict after Holm's adjustment over the family of
    variants it was compared with (``p_adjusted <= alpha``; the same as raw for one variant).
    ``detectable_pct``: the smallest difference this run would have found 80% of the time.
    """

    name: str
    ratio: float  # variant / baseline; > 1 means the variant is slower
    diff_pct: float  # (ratio - 1) * 100
    ci_low_pct: float
    ci_high_pct: float
    significant: bool
    n_pairs: int = 0
    p_value: float = math.nan
    p_adjusted: float = math.nan
    significant_raw: bool = False
    detectable_pct: float = math.nan
    family_size: int = 1  # how many verdicts Holm's adjustment was taken over

    @property
    def half_width_pct(self) -> float:
        return (self.ci_high_pct - self.ci_low_pct) / 2.0

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low_pct > 0.0 or self.ci_high_pct < 0.0

    def adjusted(self, p_adjusted: float, family_size: int) -> Difference:
        """This difference with its verdict after a family-wise adjustment."""
        return replace(
            self,
            p_adjusted=p_adjusted,
            family_size=family_size,
            significant=self.significant_raw and p_adjusted <= ALPHA,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holm_adjusted(differences: Mapping[str, Difference]) -> dict[str, Difference]:
    """Each difference with Holm's adjustment over all of them (one family)."""
    names = list(differences)
    adjusted = holm([differences[name].p_value for name in names])
    return {name: differences[name].adjusted(p, len(names)) for name, p in zip(names, adjusted, strict=True)}


def paired_difference(
    name: str,
    baseline_ms: np.ndarray | Sequence[float],
    variant_ms: np.ndarray | Sequence[float],
    noise_floor_pct: float = 0.0,
) -> Difference:
    """Compare paired samples (one pair per round): ratio, its 95% CI, the sign test, significance.

    Significant means the sign test rejects "median ratio 1" at 5% (equivalently the CI excludes
    zero) and, when a ``noise_floor_pct`` is given, |difference| exceeds it (a minimum effect of
    interest; the A/A control no longer sets one).
    """
    baseline = np.asarray(baseline_ms, dtype=np.float64)
    variant = np.asarray(variant_ms, dtype=np.float64)
    if baseline.shape != variant.shape:
        raise ValueError(f"paired samples differ in length: {baseline.shape} vs {variant.shape}")
    log_ratio = np.log(variant / baseline)
    center = float(np.median(log_ratio)) if log_ratio.size else math.nan
    low, high = median_ci(log_ratio)
    diff_pct = math.expm1(center) * 100.0
    ci_low_pct, ci_high_pct = math.expm1(low) * 100.0, math.expm1(high) * 100.0
    p_value = sign_test_p(log_ratio)
    significant = p_value <= ALPHA and abs(diff_pct) > noise_floor_pct
    return Difference(
        name=name,
        ratio=math.exp(center),
        diff_pct=diff_pct,
        ci_low_pct=ci_low_pct,
        ci_high_pct=ci_high_pct,
        significant=significant,
        n_pairs=int(log_ratio.size),
        p_value=p_value,
        p_adjusted=p_value,
        significant_raw=significant,
        detectable_pct=math.expm1(detectable_effect(low, high)) * 100.0,
    )


def aa_name(baseline: str) -> str:
    """The name of the A/A control arm (the baseline timed again)."""
    return f"{baseline} (A/A)"


@dataclass(frozen=True)
class Comparison:
    """Interleaved timings of several callables and each one's paired difference to the baseline."""

    measurements: dict[str, Measurement]
    baseline: str
    differences: dict[str, Difference]  # variant name -> difference; includes the A/A control arm
    noise_floor_pct: float  # largest |difference| the A/A control's CI allows (0 without a control)
    # The variants' verdicts are Holm-adjusted as one family (the A/A control is a check, not in it).
    stop_reason: str
    rounds: int = 0
    target_rel_ci: float = 0.02
    elapsed_s: float = 0.0
    others_cpu_share: float = math.nan

    @property
    def aa_control(self) -> Difference | None:
        return self.differences.get(aa_name(self.baseline))

    def cautions(self) -> list[Caution]:
        """Each arm's spread, arms that are not exchangeable (the A/A control differs), a busy machine."""
        out = [c for name, m in self.measurements.items() for c in m.cautions(subject=name)]
        aa = self.aa_control
        if aa is not None and aa.excludes_zero:
            out.append(Caution(ARMS_DIFFER, aa.name, aa.diff_pct, 0.0, aa.ci_low_pct, aa.ci_high_pct))
        return out + busy_cautions(self.others_cpu_share)

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "measurements": {k: m.to_dict(samples=samples) for k, m in self.measurements.items()},
            "differences": {k: d.to_dict() for k, d in self.differences.items()},
            "noise_floor_pct": self.noise_floor_pct,
            "stop_reason": self.stop_reason,
            "rounds": self.rounds,
            "target_rel_ci": self.target_rel_ci,
            "elapsed_s": self.elapsed_s,
            "others_cpu_share": self.others_cpu_share,
            "warnings": [c.to_dict() for c in self.cautions()],
        }

    @classmethod
    def from_samples(
        cls,
        samples_ms: Mapping[str, Sequence[float]],
        baseline: str,
        stop_reason: str = "given",
        page_faults_per_call: Mapping[str, float] | None = None,
        context: TimingContext | None = None,
        target_rel_ci: float = 0.02,
        calls_per_sample: Mapping[str, int] | None = None,
        elapsed_s: float = 0.0,
        others_cpu_share: float = math.nan,
    ) -> Comparison:
        """The statistics of interleaved samples: ``samples_ms[name][r]`` is round r of arm ``name``.

        An arm named ``aa_name(baseline)`` is the A/A control: its CI gives the noise floor (for
        the reader) and a caution when it excludes zero (the arms are not exchangeable). The other
        variants' verdicts are Holm-adjusted together.
        """
        if baseline not in samples_ms:
            raise ValueError(f"baseline {baseline!r} is not one of {list(samples_ms)}")
        faults = page_faults_per_call or {}
        calls = calls_per_sample or {}
        measurements = {
            name: Measurement(
                samples_ms=tuple(values),
                stop_reason=stop_reason,
                page_faults_per_call=faults.get(name, math.nan),
                context=context,
                calls_per_sample=calls.get(name, 1),
                target_rel_ci=target_rel_ci,
                elapsed_s=elapsed_s,
                others_cpu_share=others_cpu_share,
            )
            for name, values in samples_ms.items()
        }
        differences: dict[str, Difference] = {}
        noise_floor = 0.0
        control = aa_name(baseline)
        if control in samples_ms:
            aa = paired_difference(control, samples_ms[baseline], samples_ms[control])
            noise_floor = max(abs(aa.ci_low_pct), abs(aa.ci_high_pct))
            differences[control] = aa
        variants = {
            name: paired_difference(name, samples_ms[baseline], values)
            for name, values in samples_ms.items()
            if name not in (baseline, control)
        }
        differences.update(holm_adjusted(variants))
        return cls(
            measurements=measurements,
            baseline=baseline,
            differences=differences,
            noise_floor_pct=noise_floor,
            stop_reason=stop_reason,
            rounds=min((len(v) for v in samples_ms.values()), default=0),
            target_rel_ci=target_rel_ci,
            elapsed_s=elapsed_s,
            others_cpu_share=others_cpu_share,
        )
