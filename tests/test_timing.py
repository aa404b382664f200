"""The timing engine: statistics on synthetic samples, and the mechanics of measure() and compare()."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from toolkit.flops import matmul_operands, matmul_rate_gflops
from toolkit.timing import (
    Comparison,
    Measurement,
    TimingContext,
    aa_name,
    bootstrap_ci,
    compare,
    configure_allocator,
    measure,
    paired_difference,
)

CPU = torch.device("cpu")


def _rounds(rng: np.random.Generator, n: int, drift: float = 0.3) -> np.ndarray:
    """Per-round machine speed: slow drift and bursts shared by every arm of a round."""
    walk = np.cumsum(rng.normal(0.0, drift / math.sqrt(n), n))
    bursts = rng.exponential(0.05, n) * (rng.random(n) < 0.1)
    return 10.0 * np.exp(walk) * (1.0 + bursts)


def _arm(rng: np.random.Generator, common: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """One arm's samples: the shared round speed times its own scale and 3% lognormal noise."""
    return common * scale * rng.lognormal(0.0, 0.03, common.size)


def test_bootstrap_ci_of_median_covers_the_true_median() -> None:
    """Over many lognormal data sets, the 95% CI of the median covers exp(mu) about 95% of the time."""
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for _ in range(trials):
        sample = rng.lognormal(mean=1.0, sigma=0.2, size=101)
        low, high = bootstrap_ci(sample, resamples=1000)
        covered += low <= math.e <= high
    assert 0.88 <= covered / trials <= 0.995


def test_bootstrap_ci_is_seeded_and_ordered() -> None:
    """The same samples give the same CI, which brackets the sample median."""
    sample = np.random.default_rng(2).normal(5.0, 1.0, 50)
    first, second = bootstrap_ci(sample), bootstrap_ci(sample)
    assert first == second
    assert first[0] <= float(np.median(sample)) <= first[1]


def test_measurement_statistics_match_numpy() -> None:
    """median, quartiles, IQR and min are NumPy's on the raw samples; rel_ci is the CI's half-width."""
    samples = list(np.random.default_rng(3).gamma(5.0, 2.0, 301))
    m = Measurement(samples_ms=samples, stop_reason="budget", page_faults_per_call=0.0)
    q25, q50, q75 = np.quantile(samples, [0.25, 0.5, 0.75])
    assert m.median_ms == pytest.approx(q50)
    assert m.iqr_ms == pytest.approx(q75 - q25)
    assert m.min_ms == min(samples)
    assert m.ci_low_ms < m.median_ms < m.ci_high_ms
    assert m.rel_ci == pytest.approx((m.ci_high_ms - m.ci_low_ms) / 2 / q50)
    json.dumps(m.to_dict())


def test_aa_control_is_not_significant_across_seeds() -> None:
    """Two arms from the same distribution, with shared drift: the A/A CI excludes zero rarely (~5%)."""
    false_alarms = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        common = _rounds(rng, 120)
        samples = {"base": list(_arm(rng, common)), aa_name("base"): list(_arm(rng, common))}
        result = Comparison.from_samples(samples, "base")
        aa = result.aa_control
        assert aa is not None
        false_alarms += aa.significant
    assert false_alarms <= 6


def test_planted_ten_percent_shift_is_found() -> None:
    """A variant 10% slower is significant, its CI covers +10%, and it exceeds the A/A noise floor."""
    rng = np.random.default_rng(7)
    common = _rounds(rng, 100)
    samples = {
        "base": list(_arm(rng, common)),
        aa_name("base"): list(_arm(rng, common)),
        "slow": list(_arm(rng, common, 1.10)),
        "same": list(_arm(rng, common)),
    }
    result = Comparison.from_samples(samples, "base")
    slow = result.differences["slow"]
    assert slow.significant
    assert slow.ci_low_pct < 10.0 < slow.ci_high_pct
    assert abs(slow.diff_pct) > result.noise_floor_pct > 0
    assert slow.ratio == pytest.approx(1.10, rel=0.02)
    assert not result.differences["same"].significant


def test_pairing_removes_shared_drift() -> None:
    """A 2% shift under strong drift: paired rounds find it, although the raw medians' CIs overlap."""
    rng = np.random.default_rng(11)
    common = _rounds(rng, 400, drift=1.0)
    base, variant = _arm(rng, common), _arm(rng, common, 1.02)
    diff = paired_difference("variant", base, variant)
    assert diff.significant
    assert diff.ci_low_pct < 2.0 < diff.ci_high_pct
    base_ci, variant_ci = bootstrap_ci(base), bootstrap_ci(variant)
    assert base_ci[1] > variant_ci[0]  # unpaired, the two medians cannot be told apart


def test_difference_below_noise_floor_is_not_significant() -> None:
    """A CI that excludes zero is still not a finding when the difference is inside the noise floor."""
    rng = np.random.default_rng(5)
    common = _rounds(rng, 300)
    base, variant = _arm(rng, common), _arm(rng, common, 1.02)
    assert paired_difference("v", base, variant).significant
    assert not paired_difference("v", base, variant, noise_floor_pct=5.0).significant


def test_configure_allocator_is_idempotent() -> None:
    """The allocator is set once; later calls return the same description; children inherit it."""
    first = configure_allocator()
    assert configure_allocator() == first
    assert isinstance(first, str)
    assert first
    if first.startswith("glibc"):
        assert os.environ["MALLOC_MMAP_MAX_"] == "0"
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(2**31 - 1)
        # A child process started now inherits the settings through its environment.
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['MALLOC_MMAP_MAX_'])"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.strip() == "0"


def test_measure_calls_under_inference_mode_and_reports_context() -> None:
    """measure() runs the callable under inference_mode, keeps every sample, records the context."""
    seen: list[bool] = []

    def fn() -> None:
        seen.append(torch.is_inference_mode_enabled())
        time.sleep(0.0005)

    context = TimingContext.capture(CPU, torch.float32, batch=2, seq_len=8)
    m = measure(fn, device=CPU, warmup=2, budget_s=0.05, min_samples=5, max_samples=50, context=context)
    assert all(seen)
    assert m.calls_per_sample == 1
    assert 5 <= m.n_samples <= 50
    assert len(seen) == 2 + m.n_samples  # warm-up calls plus one call per sample
    assert all(s >= 0.5 for s in m.samples_ms)  # each sleep lasts at least 0.5 ms
    assert m.stop_reason in ("target", "budget", "max_samples")
    assert m.page_faults_per_call >= 0
    assert m.context is not None
    assert m.context.batch == 2
    assert m.context.threads == torch.get_num_threads()
    json.dumps(m.to_dict())


def test_measure_stop_reasons() -> None:
    """A loose target stops at the minimum; a zero budget stops on budget; a cap stops at max_samples."""

    def fn() -> None:
        time.sleep(0.0003)

    loose = measure(fn, device=CPU, warmup=1, target_rel_ci=10.0, budget_s=30.0, min_samples=4)
    assert (loose.stop_reason, loose.n_samples) == ("target", 4)
    broke = measure(fn, device=CPU, warmup=1, target_rel_ci=0.0, budget_s=0.0, min_samples=6)
    assert (broke.stop_reason, broke.n_samples) == ("budget", 6)
    capped = measure(fn, device=CPU, warmup=1, target_rel_ci=0.0, budget_s=30.0, min_samples=3, max_samples=7)
    assert (capped.stop_reason, capped.n_samples) == ("max_samples", 7)


def test_measure_repeats_fast_calls_within_a_sample() -> None:
    """A call far below the timer's useful resolution is repeated inside each sample."""
    counter = [0]

    def fn() -> None:
        counter[0] += 1

    m = measure(fn, device=CPU, warmup=1, budget_s=0.0, min_samples=3)
    assert m.calls_per_sample > 1
    assert counter[0] == 1 + 3 * m.calls_per_sample


def test_compare_interleaves_with_rotating_order() -> None:
    """Every round calls each arm once (A/A control included), and the first arm rotates."""
    calls: list[str] = []

    def arm(name: str) -> object:
        def fn() -> None:
            calls.append(name)
            time.sleep(0.0003)

        return fn

    result = compare(
        {"a": arm("a"), "b": arm("b")}, baseline="a", device=CPU, warmup=1, budget_s=0.0, min_rounds=6
    )
    assert set(result.measurements) == {"a", "b", aa_name("a")}
    assert result.rounds == 6
    assert result.stop_reason == "budget"
    timed = calls[3:]  # after one warm-up call per arm (the A/A arm warms up "a" again)
    rounds = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert len(rounds) == 6
    assert [r[0] for r in rounds[:3]] == ["a", "b", "a"]  # rotating start: a, b, then the A/A arm (a)
    assert all(sorted(r) == ["a", "a", "b"] for r in rounds)
    assert set(result.differences) == {"b", aa_name("a")}
    assert math.isfinite(result.noise_floor_pct)
    json.dumps(result.to_dict())


def test_compare_reports_progress() -> None:
    """The progress callback sees every round."""
    seen: list[int] = []
    compare(
        {"x": lambda: time.sleep(0.0003)},
        baseline="x",
        device=CPU,
        warmup=1,
        budget_s=0.0,
        min_rounds=3,
        progress=lambda done, total, description: seen.append(done),
    )
    assert seen == [1, 2, 3]


def test_matmul_rate_is_positive() -> None:
    """The machine's matmul rate is a finite positive number of GFLOP/s."""
    rate = matmul_rate_gflops(CPU, torch.float32, size=64, budget_s=0.05)
    assert math.isfinite(rate)
    assert rate > 0
    # The rate is 2·n³ FLOP over the median time of that product, timed here independently.
    a, b = matmul_operands(CPU, torch.float32, 64)
    assert a.shape == b.shape == (64, 64)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    independent = 2 * 64**3 / float(np.median(times)) / 1e9
    assert independent / 20 < rate < independent * 20  # same order of magnitude on a noisy machine


@pytest.mark.cuda
def test_measure_on_cuda_uses_events() -> None:
    """On a GPU the engine times with CUDA events and records the GPU's name."""
    device = torch.device("cuda")
    a = torch.randn(256, 256, device=device)
    context = TimingContext.capture(device, torch.float32)
    m = measure(lambda: a @ a, device=device, budget_s=0.2, min_samples=5, context=context)
    assert m.median_ms > 0
    assert m.n_samples >= 5
    assert m.context is not None
    assert m.context.device_name == torch.cuda.get_device_name(device)
    # The timer is the CUDA-event one, and it sees GPU work: a product 8x larger (in n) takes longer.
    from toolkit.timing import engine

    assert engine._Timer(device).cuda
    big = torch.randn(2048, 2048, device=device)
    m_big = measure(lambda: big @ big, device=device, budget_s=0.2, min_samples=5)
    assert m_big.median_ms > m.median_ms
