"""The timing engine: statistics on synthetic samples, and the mechanics of measure() and compare()."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from toolkit.timing import (
    Comparison,
    Measurement,
    aa_name,
    bootstrap_ci,
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
