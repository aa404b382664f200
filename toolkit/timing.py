"""How anything in the toolkit is timed: warm-up, synchronisation, interleaving and statistics.

Two entry points:

- :func:`measure` times one callable: warm-up, then repeated calls (``perf_counter`` on CPU, CUDA
  events after a synchronize on GPU) until the 95% bootstrap CI of the median is within a target
  (default ±2%) or a time budget runs out. The raw samples are kept; median, IQR, min and the CI
  are derived from them.
- :func:`compare` times several callables **interleaved** in one process: round-robin with a
  rotating order, so slow drift of the machine (frequency, other processes, memory) hits every arm
  alike. Each variant is reported as a paired ratio to the baseline with a bootstrap CI. An **A/A
  control** (the baseline timed again as its own arm) measures this run's noise floor; a difference
  is significant only when its CI excludes zero *and* it is larger than that floor.

Every call runs under ``torch.inference_mode()``. :func:`configure_allocator` keeps glibc from
returning freed memory to the OS between calls (otherwise every call pays minor page faults and the
same model runs ~20% slower in one process than in another); minor page faults per call are
reported so that this stays visible.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from toolkit.device import device_name

ProgressCallback = Callable[[int, int, str], None]

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
WIDE_IQR = 0.10  # warn when IQR / median is above this
BUSY_SHARE = 0.10  # warn when other processes used more than this share of the CPUs while timing
MIN_SAMPLE_S = 200e-6  # calls faster than this are repeated inside one sample (timer resolution)
MAX_CALLS_PER_SAMPLE = 1000

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: ~2 GiB of free heap is kept before trimming

_allocator_description: str | None = None


# --------------------------------------------------------------------------------------------------
# The allocator


def configure_allocator() -> str:
    """Keep freed memory inside the process so repeated calls stop paying minor page faults.

    On glibc: ``M_MMAP_MAX=0`` (large blocks come from the heap, not from fresh mmaps that are
    unmapped on free) and ``M_TRIM_THRESHOLD`` ~2 GiB (the heap is not trimmed back to the OS). The
    same settings go into ``MALLOC_*`` environment variables so child processes inherit them
    (variables the user set are left alone). Idempotent; returns a one-line description.
    """
    global _allocator_description
    if _allocator_description is not None:
        return _allocator_description
    preload = os.environ.get("LD_PRELOAD", "")
    libc = _glibc()
    if libc is None:
        _allocator_description = f"system allocator unchanged (no glibc on {platform.system()})"
    elif any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        _allocator_description = f"allocator unchanged (LD_PRELOAD={preload})"
    else:
        version = libc.gnu_get_libc_version()
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
        os.environ.setdefault("MALLOC_MMAP_MAX_", "0")
        os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(_TRIM_THRESHOLD_BYTES))
        glibc = f"glibc {version.decode() if isinstance(version, bytes) else version}"
        _allocator_description = (
            f"{glibc} malloc: no mmap for large blocks, heap kept (trim threshold 2 GiB)"
            if ok
            else f"{glibc} malloc: mallopt refused the settings; allocator unchanged"
        )
    return _allocator_description


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError):
        return None  # musl or another libc without mallopt's glibc semantics
    return libc


# --------------------------------------------------------------------------------------------------
# Context and statistics


@dataclass
class TimingContext:
    """Where and how a measurement was taken, so that numbers can be compared across runs."""

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
        cls,
        device: torch.device,
        dtype: torch.dtype | str,
        batch: int | None = None,
        seq_len: int | None = None,
        **extras: Any,
    ) -> TimingContext:
        """The context of a measurement about to be taken on ``device`` in this process."""
        return cls(
            device_name=device_name(device),
            dtype=str(dtype).removeprefix("torch."),
            torch_version=torch.__version__,
            threads=torch.get_num_threads(),
            batch=batch,
            seq_len=seq_len,
            allocator=configure_allocator(),
            extras=dict(extras),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] = lambda resamples: np.median(resamples, axis=-1),
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` (vectorised over the last axis) of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # bound the index array at ~16 MB
    stats = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        stats[start:stop] = statistic(values[rng.integers(0, n, size=(stop - start, n))])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass
class Measurement:
    """Raw per-call times of one callable and the statistics derived from them (all in ms)."""

    samples_ms: list[float]
    stop_reason: str  # "target" (CI within the target), "budget" (time ran out) or "max_samples"
    page_faults_per_call: float
    context: TimingContext | None = None
    calls_per_sample: int = 1  # fast callables are called several times per sample; samples are per call
    target_rel_ci: float = 0.02
    elapsed_s: float = 0.0
    others_cpu_share: float = math.nan  # share of all CPUs that other processes used while timing
    warnings: list[str] = field(default_factory=list)

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

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "q25_ms": self.q25_ms,
            "q75_ms": self.q75_ms,
            "min_ms": self.min_ms,
            "ci_low_ms": self.ci_low_ms,
            "ci_high_ms": self.ci_high_ms,
            "rel_ci": self.rel_ci,
            "confidence": CONFIDENCE,
            "n_samples": self.n_samples,
            "calls_per_sample": self.calls_per_sample,
            "stop_reason": self.stop_reason,
            "target_rel_ci": self.target_rel_ci,
            "elapsed_s": self.elapsed_s,
            "page_faults_per_call": self.page_faults_per_call,
            "others_cpu_share": self.others_cpu_share,
            "warnings": list(self.warnings),
            "context": self.context.to_dict() if self.context is not None else None,
        }
        if samples:
            out["samples_ms"] = list(self.samples_ms)
        return out


def describe_stop(reason: str, target_rel_ci: float) -> str:
    """A sentence for a stop reason."""
    return {
        "target": f"stopped when the median's 95% CI was within ±{target_rel_ci:.1%}",
        "budget": "stopped when the time budget ran out",
        "max_samples": "stopped at the maximum number of samples",
        "given": "samples given, not timed here",
    }.get(reason, reason)


@dataclass
class Difference:
    """A variant against the baseline from paired rounds: median of per-round time ratios."""

    name: str
    ratio: float  # variant / baseline; > 1 means the variant is slower
    diff_pct: float  # (ratio - 1) * 100
    ci_low_pct: float
    ci_high_pct: float
    significant: bool
    n_pairs: int = 0

    @property
    def half_width_pct(self) -> float:
        return (self.ci_high_pct - self.ci_low_pct) / 2.0

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low_pct > 0.0 or self.ci_high_pct < 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_difference(
    name: str,
    baseline_ms: np.ndarray | list[float],
    variant_ms: np.ndarray | list[float],
    noise_floor_pct: float = 0.0,
) -> Difference:
    """Compare paired samples (one pair per round): ratio, its 95% bootstrap CI, significance.

    Significant means the CI of the difference excludes zero and |difference| > ``noise_floor_pct``.
    """
    baseline = np.asarray(baseline_ms, dtype=np.float64)
    variant = np.asarray(variant_ms, dtype=np.float64)
    if baseline.shape != variant.shape:
        raise ValueError(f"paired samples differ in length: {baseline.shape} vs {variant.shape}")
    log_ratio = np.log(variant / baseline)
    center = float(np.median(log_ratio)) if log_ratio.size else math.nan
    low, high = bootstrap_ci(log_ratio)
    diff_pct = math.expm1(center) * 100.0
    ci_low_pct, ci_high_pct = math.expm1(low) * 100.0, math.expm1(high) * 100.0
    excludes_zero = ci_low_pct > 0.0 or ci_high_pct < 0.0
    return Difference(
        name=name,
        ratio=math.exp(center),
        diff_pct=diff_pct,
        ci_low_pct=ci_low_pct,
        ci_high_pct=ci_high_pct,
        significant=excludes_zero and abs(diff_pct) > noise_floor_pct,
        n_pairs=int(log_ratio.size),
    )


def aa_name(baseline: str) -> str:
    """The name of the A/A control arm (the baseline timed again)."""
    return f"{baseline} (A/A)"


@dataclass
class Comparison:
    """Interleaved timings of several callables and each one's paired difference to the baseline."""

    measurements: dict[str, Measurement]
    baseline: str
    differences: dict[str, Difference]  # variant name -> difference; includes the A/A control arm
    noise_floor_pct: float  # largest |difference| the A/A control's CI allows (0 without a control)
    stop_reason: str
    rounds: int = 0
    target_rel_ci: float = 0.02
    elapsed_s: float = 0.0
    others_cpu_share: float = math.nan
    warnings: list[str] = field(default_factory=list)

    @property
    def aa_control(self) -> Difference | None:
        return self.differences.get(aa_name(self.baseline))

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
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_samples(
        cls,
        samples_ms: Mapping[str, list[float]],
        baseline: str,
        stop_reason: str = "given",
        page_faults_per_call: Mapping[str, float] | None = None,
        context: TimingContext | None = None,
        target_rel_ci: float = 0.02,
    ) -> Comparison:
        """The statistics of interleaved samples: ``samples_ms[name][r]`` is round r of arm ``name``.

        An arm named ``aa_name(baseline)`` is the A/A control: it sets the noise floor, and is
        itself called significant only when its CI excludes zero (which flags order effects).
        """
        if baseline not in samples_ms:
            raise ValueError(f"baseline {baseline!r} is not one of {list(samples_ms)}")
        faults = page_faults_per_call or {}
        measurements = {
            name: Measurement(
                samples_ms=list(values),
                stop_reason=stop_reason,
                page_faults_per_call=faults.get(name, math.nan),
                context=context,
                target_rel_ci=target_rel_ci,
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
        for name, values in samples_ms.items():
            if name not in (baseline, control):
                differences[name] = paired_difference(name, samples_ms[baseline], values, noise_floor)
        warnings = [w for name, m in measurements.items() for w in _spread_warnings(m, prefix=f"{name}: ")]
        if control in differences and differences[control].excludes_zero:
            aa = differences[control]
            warnings.append(
                f"the A/A control differs from the baseline by {aa.diff_pct:+.2f}% "
                f"(CI {aa.ci_low_pct:+.2f}%..{aa.ci_high_pct:+.2f}%): arms are not exchangeable, "
                "e.g. the order of calls matters; treat small differences with caution"
            )
        return cls(
            measurements=measurements,
            baseline=baseline,
            differences=differences,
            noise_floor_pct=noise_floor,
            stop_reason=stop_reason,
            rounds=min((len(v) for v in samples_ms.values()), default=0),
            target_rel_ci=target_rel_ci,
            warnings=warnings,
        )


def _spread_warnings(measurement: Measurement, prefix: str = "") -> list[str]:
    out = []
    if measurement.n_samples >= 4 and measurement.rel_iqr > WIDE_IQR:
        out.append(
            f"{prefix}IQR is {measurement.rel_iqr:.0%} of the median: calls vary a lot; "
            "close other programs or raise the budget"
        )
    if measurement.n_samples >= 2 and measurement.rel_ci > measurement.target_rel_ci:
        out.append(
            f"{prefix}the median's 95% CI is ±{measurement.rel_ci:.1%}, wider than the "
            f"±{measurement.target_rel_ci:.1%} target; raise the budget for a tighter estimate"
        )
    return out


# --------------------------------------------------------------------------------------------------
# Watching the machine while timing


class _MachineLoad:
    """CPU time that other processes used while we were timing (from /proc/stat, else the load average)."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = os.cpu_count() or 1
        self.start()

    @staticmethod
    def _busy_jiffies() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [float(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
        return sum(fields[:8]) - fields[3] - fields[4]

    def start(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._wall = time.perf_counter()
        self._self_cpu = usage.ru_utime + usage.ru_stime
        self._busy = self._busy_jiffies()

    def others_share(self) -> float:
        """Share of all CPUs that other processes kept busy since start() (NaN when unknown)."""
        wall = time.perf_counter() - self._wall
        busy = self._busy_jiffies()
        if busy is None or self._busy is None or wall <= 0:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
            return max(0.0, load - torch.get_num_threads()) / self._cpus
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self_cpu = usage.ru_utime + usage.ru_stime - self._self_cpu
        others = (busy - self._busy) / self._tick - self_cpu
        return max(0.0, others / (wall * self._cpus))


def busy_warning(share: float) -> list[str]:
    """A warning when other processes kept more than BUSY_SHARE of the CPUs busy while timing."""
    if not share > BUSY_SHARE:
        return []
    hint = ""
    if torch.get_num_threads() >= (os.cpu_count() or 1) > 1:
        hint = (
            f"; torch uses all {torch.get_num_threads()} cores, so each call also waits for threads "
            "the OS took away: fewer threads (e.g. --threads 1) may time more steadily"
        )
    return [
        f"other processes used {share:.0%} of the CPUs while timing, so timings are slow and noisy "
        f"(interleaved comparisons stay fair){hint}"
    ]


# --------------------------------------------------------------------------------------------------
# Timing


class _Timer:
    """Times ``calls`` calls of a callable: perf_counter on CPU, CUDA events on GPU (ms per call)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            self._end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

    def __call__(self, fn: Callable[[], object], calls: int) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self._start.record()
            for _ in range(calls):
                fn()
            self._end.record()
            self._end.synchronize()
            return float(self._start.elapsed_time(self._end)) / calls
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) * 1e3 / calls


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """No garbage collection pauses inside timed calls (as timeit does)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _calls_per_sample(timer: _Timer, fn: Callable[[], object], warmup: int) -> int:
    """Warm up, then pick how many calls make one sample long enough for the timer."""
    last_ms = timer(fn, 1)
    for _ in range(max(warmup - 1, 0)):
        last_ms = timer(fn, 1)
    if last_ms <= 0:
        return MAX_CALLS_PER_SAMPLE
    return int(min(MAX_CALLS_PER_SAMPLE, max(1, math.ceil(MIN_SAMPLE_S * 1e3 / last_ms))))


def measure(
    fn: Callable[[], object],
    *,
    device: torch.device,
    warmup: int = 3,
    target_rel_ci: float = 0.02,
    budget_s: float = 10.0,
    min_samples: int = 10,
    max_samples: int = 10_000,
    context: TimingContext | None = None,
) -> Measurement:
    """Time ``fn()`` until its median's 95% CI is within ±``target_rel_ci`` or ``budget_s`` runs out.

    At least ``min_samples`` samples are taken even past the budget. Calls faster than 0.2 ms are
    repeated inside one sample; samples are always per call.
    """
    if min_samples < 2 or max_samples < min_samples:
        raise ValueError(f"need 2 <= min_samples <= max_samples, got {min_samples}, {max_samples}")
    configure_allocator()
    timer = _Timer(device)
    samples: list[float] = []
    with torch.inference_mode(), _quiet_gc():
        calls = _calls_per_sample(timer, fn, warmup)
        load = _MachineLoad()
        start = time.perf_counter()
        next_check = min_samples
        stop_reason = "max_samples"
        faults = 0
        while len(samples) < max_samples:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            samples.append(timer(fn, calls))
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            if len(samples) < min_samples:
                continue
            if time.perf_counter() - start > budget_s:
                stop_reason = "budget"
                break
            if len(samples) >= next_check:
                low, high = bootstrap_ci(np.asarray(samples), resamples=500)
                if (high - low) / 2.0 <= target_rel_ci * float(np.median(samples)):
                    stop_reason = "target"
                    break
                next_check = max(len(samples) + 1, int(len(samples) * 1.2))
        elapsed = time.perf_counter() - start
        busy = load.others_share()
    measurement = Measurement(
        samples_ms=samples,
        stop_reason=stop_reason,
        page_faults_per_call=faults / (len(samples) * calls),
        context=context,
        calls_per_sample=calls,
        target_rel_ci=target_rel_ci,
        elapsed_s=elapsed,
    )
    measurement.others_cpu_share = busy
    measurement.warnings = _spread_warnings(measurement) + busy_warning(busy)
    return measurement


def compare(
    fns: Mapping[str, Callable[[], object]],
    *,
    baseline: str,
    device: torch.device,
    aa_control: bool = True,
    warmup: int = 3,
    target_rel_ci: float = 0.02,
    budget_s: float = 20.0,
    min_rounds: int = 10,
    max_rounds: int = 10_000,
    context: TimingContext | None = None,
    progress: ProgressCallback | None = None,
    converge_differences: bool = True,
) -> Comparison:
    """Time the callables interleaved (round-robin, rotating order) and compare each to ``baseline``.

    With ``aa_control`` the baseline is also timed as a separate arm, ``aa_name(baseline)``, whose
    difference from the baseline is this run's noise floor. Rounds continue until every median and
    (with ``converge_differences``) every difference has a 95% CI within ±``target_rel_ci``, or
    ``budget_s`` runs out (at least ``min_rounds`` rounds).
    """
    if baseline not in fns:
        raise ValueError(f"baseline {baseline!r} is not one of {list(fns)}")
    if min_rounds < 2:
        raise ValueError(f"min_rounds must be at least 2, got {min_rounds}")
    configure_allocator()
    arms: dict[str, Callable[[], object]] = dict(fns)
    if aa_control:
        arms[aa_name(baseline)] = fns[baseline]
    names = list(arms)
    timer = _Timer(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, int] = dict.fromkeys(names, 0)
    report = progress or (lambda done, total, description: None)
    with torch.inference_mode(), _quiet_gc():
        calls = {name: _calls_per_sample(timer, arms[name], warmup) for name in names}
        load = _MachineLoad()
        start = time.perf_counter()
        rounds, next_check, stop_reason = 0, min_rounds, "max_samples"
        expected = min_rounds
        while rounds < max_rounds:
            shift = rounds % len(names)
            for name in names[shift:] + names[:shift]:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                samples[name].append(timer(arms[name], calls[name]))
                faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            rounds += 1
            elapsed = time.perf_counter() - start
            expected = max(expected, min(max_rounds, int(budget_s / (elapsed / rounds))))
            report(rounds, expected, f"timing {len(names)} arms, round {rounds}")
            if rounds < min_rounds:
                continue
            if elapsed > budget_s:
                stop_reason = "budget"
                break
            if rounds >= next_check:
                if _comparison_converged(samples, baseline, target_rel_ci, converge_differences):
                    stop_reason = "target"
                    break
                next_check = max(rounds + 1, int(rounds * 1.2))
        elapsed = time.perf_counter() - start
        busy = load.others_share()
    result = Comparison.from_samples(
        samples,
        baseline,
        stop_reason=stop_reason,
        page_faults_per_call={name: faults[name] / (rounds * calls[name]) for name in names},
        context=context,
        target_rel_ci=target_rel_ci,
    )
    for name, measurement in result.measurements.items():
        measurement.calls_per_sample = calls[name]
        measurement.elapsed_s = elapsed
        measurement.others_cpu_share = busy
    result.elapsed_s = elapsed
    result.others_cpu_share = busy
    result.warnings += busy_warning(busy)
    return result


def _comparison_converged(
    samples: Mapping[str, list[float]], baseline: str, target_rel_ci: float, differences: bool
) -> bool:
    base = np.asarray(samples[baseline])
    for name, values in samples.items():
        arr = np.asarray(values)
        low, high = bootstrap_ci(arr, resamples=500)
        if (high - low) / 2.0 > target_rel_ci * float(np.median(arr)):
            return False
        if differences and name != baseline:
            low, high = bootstrap_ci(np.log(arr / base), resamples=500)
            if (math.expm1(high) - math.expm1(low)) / 2.0 > target_rel_ci:
                return False
    return True


# --------------------------------------------------------------------------------------------------
# The machine's matmul rate


def matmul_operands(
    device: torch.device, dtype: torch.dtype, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two square matrices for measuring the matmul rate (1024 on CPU, 4096 on GPU by default)."""
    n = size or (4096 if device.type == "cuda" else 1024)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    return a, b


def matmul_rate_gflops(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    *,
    size: int | None = None,
    budget_s: float = 2.0,
    target_rel_ci: float = 0.02,
) -> float:
    """This machine's dense matmul rate now: 2·n³ FLOP of an n×n product over its median time."""
    a, b = matmul_operands(device, dtype, size)
    out = torch.empty_like(a)
    measurement = measure(
        lambda: torch.mm(a, b, out=out),
        device=device,
        budget_s=budget_s,
        target_rel_ci=target_rel_ci,
        min_samples=5,
    )
    n = a.shape[0]
    return 2.0 * n**3 / (measurement.median_ms * 1e-3) / 1e9
