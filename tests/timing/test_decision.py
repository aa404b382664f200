"""The decision rule's laws on synthetic samples (no timing): calibration, power, Holm, detectable effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.timing import Comparison, aa_name, paired_difference
from toolkit.timing.decision import detectable_effect, holm, median_ci, sign_test_p


def _binomial_upper(rate: float, trials: int) -> float:
    """A generous one-sided bound on an observed rate whose true value is ``rate`` (3 SE above)."""
    return rate + 3.0 * math.sqrt(rate * (1.0 - rate) / trials)


def _timed_pair(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two arms timed in the same rounds: shared drift and bursts, heavy-tailed per-call noise."""
    common = (
        10.0
        * np.exp(np.cumsum(rng.normal(0.0, 0.05, n)))
        * (1.0 + rng.exponential(0.2, n) * (rng.random(n) < 0.1))
    )

    def arm() -> np.ndarray:
        return common * rng.lognormal(0.0, 0.03, n) * (1.0 + rng.exponential(0.3, n) * (rng.random(n) < 0.05))

    return arm(), arm() * (1.0 + shift)


def test_sign_test_and_median_ci_match_hand_computed_binomials() -> None:
    """n = 10: P(X <= 1) = 11/1024 <= 2.5% < P(X <= 2) = 56/1024, so the CI is [x(2), x(9)]."""
    values = np.arange(1.0, 11.0)  # 1..10, all positive
    assert median_ci(values) == (2.0, 9.0)
    nine_of_ten = np.array([-1.0, *range(1, 10)])
    assert sign_test_p(nine_of_ten) == pytest.approx(2 * 11 / 1024)
    assert sign_test_p(values) == pytest.approx(2 / 1024)
    assert sign_test_p([0.0, 0.0]) == 1.0
    assert median_ci(np.arange(5.0)) == (0.0, 4.0)  # too few for 95%: the whole range


def test_the_ci_excludes_zero_exactly_when_the_sign_test_rejects() -> None:
    rng = np.random.default_rng(0)
    for n in (6, 7, 10, 31, 200):
        for _ in range(200):
            values = rng.normal(rng.uniform(-0.5, 0.5), 1.0, n)
            low, high = median_ci(values)
            assert (low > 0 or high < 0) == (sign_test_p(values) <= 0.05), (n, values)


@pytest.mark.parametrize("rounds", [10, 30, 200])
def test_identical_arms_are_called_different_at_most_at_the_nominal_rate(rounds: int) -> None:
    """Over 1000 seeded draws of two identical arms, significant at most ~5% of the time."""
    trials = 1000
    calls = 0
    for seed in range(trials):
        base, variant = _timed_pair(np.random.default_rng(seed), rounds)
        calls += paired_difference("same", base, variant).significant
    assert calls / trials <= _binomial_upper(0.05, trials)


def test_a_shift_of_four_standard_errors_is_found() -> None:
    """A shift of 4 x the noise of the median (1.25 sigma / sqrt(n)) is found almost always."""
    rounds, sigma, trials = 100, 0.03, 300
    shift = 4.0 * 1.2533 * sigma * math.sqrt(2.0) / math.sqrt(rounds)  # the paired log ratio's noise
    found = 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        base = rng.lognormal(0.0, sigma, rounds)
        variant = rng.lognormal(0.0, sigma, rounds) * math.exp(shift)
        difference = paired_difference("slow", base, variant)
        found += difference.significant and difference.diff_pct > 0
    assert found / trials >= 0.9


def test_the_detectable_effect_is_found_eighty_percent_of_the_time() -> None:
    """Plant exactly the detectable effect a null run reports: detection ~ 80% over many draws."""
    rng = np.random.default_rng(42)
    rounds, sigma, trials = 200, 0.04, 600
    null = [paired_difference("null", *(rng.lognormal(0.0, sigma, (2, rounds)))) for _ in range(50)]
    effect_pct = float(np.median([d.detectable_pct for d in null]))
    assert 0.5 < effect_pct < 2.5
    found = 0
    for _ in range(trials):
        base, variant = rng.lognormal(0.0, sigma, (2, rounds))
        found += paired_difference("v", base, variant * (1.0 + effect_pct / 100.0)).significant
    assert 0.70 <= found / trials <= 0.90


def test_detectable_effect_is_2_8_standard_errors() -> None:
    half_width = 1.959964 * 0.5  # a CI of +-1.96 SE with SE = 0.5
    assert detectable_effect(-half_width, half_width) == pytest.approx((1.959964 + 0.841621) * 0.5, rel=1e-5)
    assert math.isnan(detectable_effect(math.nan, 1.0))


def test_holm_matches_a_hand_computed_example() -> None:
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max(0.06, 0.04).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_six_identical_variants_are_wrong_together_at_most_five_percent_of_the_time() -> None:
    """Family-wise error: with Holm, any of six identical variants called significant <= ~5% of runs."""
    trials, raw_runs, adjusted_runs = 600, 0, 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        base, _ = _timed_pair(rng, 60)
        samples = {"base": list(base), aa_name("base"): list(_timed_pair(rng, 60)[0])}
        samples |= {f"v{i}": list(base * rng.lognormal(0.0, 0.04, 60)) for i in range(6)}
        result = Comparison.from_samples(samples, "base")
        variants = [d for name, d in result.differences.items() if name.startswith("v")]
        assert all(d.family_size == 6 and d.p_adjusted >= d.p_value for d in variants)
        raw_runs += any(d.significant_raw for d in variants)
        adjusted_runs += any(d.significant for d in variants)
    assert adjusted_runs / trials <= _binomial_upper(0.05, trials)
    assert raw_runs > 2 * adjusted_runs  # without the adjustment the family errs far more often


def test_a_lone_variant_keeps_its_raw_verdict() -> None:
    rng = np.random.default_rng(3)
    base, slow = _timed_pair(rng, 200, shift=0.05)
    result = Comparison.from_samples({"base": list(base), "slow": list(slow)}, "base")
    slow_diff = result.differences["slow"]
    assert slow_diff.significant
    assert slow_diff.significant_raw
    assert slow_diff.p_adjusted == slow_diff.p_value
    assert 0 < slow_diff.detectable_pct < 5.0
