"""The engines: :func:`measure` times one callable, :func:`compare` times several interleaved.

- :func:`measure`: warm-up, then repeated calls (``perf_counter`` on CPU, CUDA events after a
  synchronize on GPU) until the 95% bootstrap CI of the median is within a target (default ±2%) or
  a time budget runs out.
- :func:`compare`: every arm once per round, so slow drift of the machine (frequency, other
  processes, memory) hits every arm alike; the first arm rotates and the others follow in a seeded
  random order, so that no arm always runs after the same one (caches, clocks) and two arms that do
  the same work are exchangeable, which the exact test below relies on. Each variant is a paired
  ratio to the baseline with the distribution-free CI of its median and the exact sign test
  (``toolkit.timing.decision``), Holm-adjusted over the variants. An A/A control (the baseline
  timed again as its own arm) shows this run's noise floor and checks that the arms are
  exchangeable (a caution when it is not).

Both stop early, with ``stop_reason == "interrupted"``, once :func:`toolkit.signals.stop_requested`
(a SIGINT or SIGTERM under :func:`toolkit.signals.graceful`) and two samples are in hand.
:func:`compare` also stops, with ``stop_reason == "out_of_memory"``, when an arm's call fails to
allocate after admission let it start: the rounds completed before it are kept (the unfinished one
is dropped); with fewer than two, :class:`toolkit.errors.InsufficientMemoryError` is raised.

Every call runs under ``torch.inference_mode()``, with the allocator configured
(:func:`toolkit.timing.machine.configure_allocator`) and garbage collection paused.
"""

from __future__ import annotations

import contextlib
import gc
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch

from toolkit.errors import InsufficientMemoryError, is_out_of_memory
from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import stop_requested
from toolkit.timing.decision import median_ci
from toolkit.timing.machine import MachineLoad, configure_allocator
from toolkit.timing.stats import Comparison, Measurement, TimingContext, aa_name, bootstrap_ci

MIN_SAMPLE_S = 200e-6  # calls faster than this are repeated inside one sample (timer resolution)
MAX_CALLS_PER_SAMPLE = 1000
ORDER_SEED = 0  # the seed of the arms' order within rounds
MIN_INTERRUPTED = 2  # samples (rounds) taken before a stop request (SIGINT, SIGTERM) is honoured


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
        load = MachineLoad()
        start = time.perf_counter()
        next_check = min_samples
        stop_reason = "max_samples"
        faults = 0
        while len(samples) < max_samples:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            samples.append(timer(fn, calls))
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            if len(samples) >= MIN_INTERRUPTED and stop_requested() is not None:
                stop_reason = "interrupted"
                break
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
    return Measurement(
        samples_ms=tuple(samples),
        stop_reason=stop_reason,
        page_faults_per_call=faults / (len(samples) * calls),
        context=context,
        calls_per_sample=calls,
        target_rel_ci=target_rel_ci,
        elapsed_s=elapsed,
        others_cpu_share=busy,
    )


def compare(
    fns: Mapping[str, Callable[[], object]],
    *,
    baseline: str,
    device: torch.device,
    aa_control: bool | Callable[[], object] = True,
    warmup: int = 3,
    target_rel_ci: float = 0.02,
    budget_s: float = 20.0,
    min_rounds: int = 10,
    max_rounds: int = 10_000,
    context: TimingContext | None = None,
    progress: ProgressCallback | None = None,
    converge_differences: bool = True,
) -> Comparison:
    """Time the callables interleaved (each round: a rotating first arm, then the others in a seeded
    random order) and compare each to ``baseline``.

    With ``aa_control`` the baseline is also timed as a separate arm, ``aa_name(baseline)``, whose
    difference from the baseline shows this run's noise floor: ``True`` times the baseline's own
    callable again; a callable is that arm instead, the same work on memory of its own (a copy of
    the model), so that the baseline gains nothing from sharing caches with its control. Rounds
    continue until every median and (with ``converge_differences``) every difference has a 95% CI
    within ±``target_rel_ci``, or ``budget_s`` runs out (at least ``min_rounds`` rounds).
    """
    if baseline not in fns:
        raise ValueError(f"baseline {baseline!r} is not one of {list(fns)}")
    if min_rounds < 2:
        raise ValueError(f"min_rounds must be at least 2, got {min_rounds}")
    configure_allocator()
    arms: dict[str, Callable[[], object]] = dict(fns)
    if aa_control is not False:
        arms[aa_name(baseline)] = fns[baseline] if aa_control is True else aa_control
    names = list(arms)
    timer = _Timer(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, int] = dict.fromkeys(names, 0)
    report = progress or no_progress
    with torch.inference_mode(), _quiet_gc():
        calls = {name: _calls_per_sample(timer, arms[name], warmup) for name in names}
        load = MachineLoad()
        start = time.perf_counter()
        rounds, next_check, stop_reason = 0, min_rounds, "max_samples"
        expected = min_rounds
        order = np.random.default_rng(ORDER_SEED)
        while rounds < max_rounds:
            first = names[rounds % len(names)]
            rest = [name for name in names if name != first]
            try:
                for name in [first, *(rest[i] for i in order.permutation(len(rest)))]:
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    samples[name].append(timer(arms[name], calls[name]))
                    faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
                if not is_out_of_memory(exc):
                    raise
                for name in names:  # the unfinished round
                    del samples[name][rounds:]
                if rounds < MIN_INTERRUPTED:
                    raise InsufficientMemoryError(
                        f"ran out of memory while timing ({str(exc).splitlines()[0][:160]}) before two "
                        "rounds were complete; nothing measured"
                    ) from None
                stop_reason = "out_of_memory"
                break
            rounds += 1
            elapsed = time.perf_counter() - start
            expected = max(expected, min(max_rounds, int(budget_s / (elapsed / rounds))))
            report(rounds, expected, f"timing {len(names)} arms, round {rounds}")
            if rounds >= MIN_INTERRUPTED and stop_requested() is not None:
                stop_reason = "interrupted"
                break
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
    return Comparison.from_samples(
        samples,
        baseline,
        stop_reason=stop_reason,
        page_faults_per_call={name: faults[name] / (rounds * calls[name]) for name in names},
        context=context,
        target_rel_ci=target_rel_ci,
        calls_per_sample=calls,
        elapsed_s=elapsed,
        others_cpu_share=busy,
    )


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
            low, high = median_ci(np.log(arr / base))
            if (math.expm1(high) - math.expm1(low)) / 2.0 > target_rel_ci:
                return False
    return True
