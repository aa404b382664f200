"""Latency sweeps: configs per value, trend fits on known curves, a tiny sweep end to end, the plot."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from toolkit import ModelConfig
from toolkit.cli.latency import parse_values
from toolkit.errors import SweepError
from toolkit.flops import forward_flops
from toolkit.studies.latency import (
    VARY_CHOICES,
    LatencyResult,
    against_default,
    default_values,
    fit_trend,
    influence,
    sweep_configs,
)
from toolkit.tables.latency import context_text

CPU = torch.device("cpu")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_fit_trend_recovers_a_line_and_a_power_law() -> None:
    """A straight line gives its intercept and slope exactly; y = 3·x² gives log-log exponent 2."""
    x = [1.0, 2.0, 4.0, 8.0]
    line = fit_trend(x, [2.0 + 0.5 * v for v in x])
    assert line.intercept_ms == pytest.approx(2.0)
    assert line.slope_ms == pytest.approx(0.5)
    assert line.r2_linear == pytest.approx(1.0)
    assert fit_trend(x, [3.0 * v**2 for v in x]).exponent == pytest.approx(2.0)


def test_fit_trend_quadratic_share() -> None:
    """For a + b·S + c·S², the S² term's share at S0 is c·S0² / latency(S0)."""
    x = np.array([256.0, 512.0, 1024.0, 2048.0, 4096.0])
    a, b, c = 1.0, 0.01, 2e-6
    trend = fit_trend(x, a + b * x + c * x**2, quadratic_at=1024.0)
    assert trend.quadratic == pytest.approx((a, b, c), rel=1e-6, abs=1e-9)
    at = a + b * 1024 + c * 1024**2
    assert trend.quadratic_share == pytest.approx(c * 1024**2 / at)
    assert trend.r2_quadratic == pytest.approx(1.0)


def test_parse_values() -> None:
    """Comma-separated positive integers, sorted; anything else is refused with the expected form."""
    assert parse_values("8,1, 2,4") == [1, 2, 4, 8]
    for bad in ("1,two", "4", "0,1", "2,2,4", "1.5,2"):
        with pytest.raises(SweepError):
            parse_values(bad)


def test_sweep_configs_change_only_the_swept_parameter() -> None:
    """Each value changes one field; heads keep d_model; seq-len keeps the config (lengths must fit)."""
    base = ModelConfig()
    heads = sweep_configs("heads", [1, 4], base, 1, 1024)
    assert [(c.n_heads, c.d_model, c.head_dim) for c, _, _ in heads] == [(1, 256, 256), (4, 256, 64)]
    seq = sweep_configs("seq-len", [512, 1024], base, 1, 1024)
    assert [(c, s) for c, _, s in seq] == [(base, 512), (base, 1024)]
    batch = sweep_configs("batch", [2, 8], base, 1, 1024)
    assert [(c, b) for c, b, _ in batch] == [(base, 2), (base, 8)]
    layers = sweep_configs("layers", [1, 6], base, 1, 1024)
    assert [c.replace(n_layers=3) for c, _, _ in layers] == [base, base]


def test_sweep_configs_refuse_impossible_values() -> None:
    """Heads that do not divide d_model, and widths that heads do not divide, are refused with the fix."""
    with pytest.raises(SweepError, match=r"do not divide d_model=256.*divisors"):
        sweep_configs("heads", [2, 3], ModelConfig(), 1, 1024)
    with pytest.raises(SweepError, match="multiples of heads=2"):
        sweep_configs("d-model", [64, 99], ModelConfig(), 1, 1024)
    with pytest.raises(SweepError, match="unknown vary"):
        sweep_configs("width", [1, 2], ModelConfig(), 1, 1024)


@pytest.mark.parametrize("max_seq_len", [1, 3, 32, 1024, 4096])
def test_seq_len_defaults_never_exceed_the_position_table(max_seq_len: int) -> None:
    """Default lengths fit max_seq_len (two at least, when it allows), and longer ones are refused."""
    config = ModelConfig(max_seq_len=max_seq_len)
    lengths = default_values("seq-len", max_seq_len)
    assert lengths == tuple(sorted(set(lengths)))
    assert max(lengths) <= max_seq_len
    assert len(lengths) >= min(2, max_seq_len)
    assert [s for _, _, s in sweep_configs("seq-len", lengths, config, 1, max_seq_len)] == list(lengths)
    with pytest.raises(SweepError, match=f"exceed max_seq_len={max_seq_len}"):
        sweep_configs("seq-len", [1, max_seq_len + 1], config, 1, max_seq_len)


def test_default_values_fit_the_default_config() -> None:
    """Every default sweep is valid around the reference config."""
    for vary in VARY_CHOICES:
        assert len(sweep_configs(vary, default_values(vary, 1024), ModelConfig(), 1, 1024)) >= 4


def test_tiny_sweep_rows_and_derived_rates(tiny_sweep: LatencyResult) -> None:
    """One row per value with its own config; tokens/s and GFLOP/s follow from the median and FLOPs."""
    rows = tiny_sweep.rows()
    assert [r["value"] for r in rows] == [1, 2, 4]
    assert [r["n_layers"] for r in rows] == [1, 2, 4]
    assert tiny_sweep.default_value == 2
    for point, row in zip(tiny_sweep.points, rows, strict=True):
        assert row["flops"] == forward_flops(point.config, 1, 32).total
        seconds = row["median_ms"] / 1e3
        assert row["tokens_per_s"] == pytest.approx(32 / seconds)
        assert row["gflops"] == pytest.approx(row["flops"] / seconds / 1e9)
        assert row["pct_of_matmul"] == pytest.approx(100 * row["gflops"] / tiny_sweep.matmul_gflops)
        assert row["n_samples"] >= 10
        assert row["ci_low_ms"] <= row["median_ms"] <= row["ci_high_ms"]
    matmul = tiny_sweep.matmul
    assert tiny_sweep.matmul_gflops == pytest.approx(2 * 64**3 / (matmul.median_ms * 1e-3) / 1e9)
    assert tiny_sweep.rounds == matmul.n_samples >= 10
    assert all(p.measurement.n_samples == tiny_sweep.rounds for p in tiny_sweep.points)  # interleaved
    assert math.isfinite(tiny_sweep.trend.slope_ms)
    data = json.loads(json.dumps(tiny_sweep.to_dict()))
    assert data["context"]["threads"] == torch.get_num_threads()
    assert "full S×S" in data["flop_convention"]
    frame = tiny_sweep.to_frame()
    assert list(frame["value"]) == [1, 2, 4]
    assert {"device_name", "dtype", "allocator", "matmul_gflops"} <= set(frame.columns)


def test_influence_share(tiny_sweep: LatencyResult) -> None:
    """The share of the default latency is slope × default / the linear fit at the default."""
    item = influence(tiny_sweep)
    t = tiny_sweep.trend
    assert item.fit == "linear"
    assert item.share == pytest.approx(t.slope_ms * 2 / (t.intercept_ms + 2 * t.slope_ms))


def test_influence_of_seq_len_uses_the_quadratic(tiny_sweep: LatencyResult) -> None:
    """For seq-len the share and the local slope come from a + b·S + c·S² at the default S."""
    x = np.array([256.0, 512.0, 1024.0, 2048.0])
    a, b, c = 10.0, 0.02, 1e-5
    result = dataclasses.replace(
        tiny_sweep, vary="seq-len", default_value=1024, trend=fit_trend(x, a + b * x + c * x**2, 1024.0)
    )
    item = influence(result)
    at = a + b * 1024 + c * 1024**2
    assert item.fit == "quadratic"
    assert item.share == pytest.approx((at - a) / at)
    assert item.slope_ms == pytest.approx(b + 2 * c * 1024)


def test_compile_time_is_reported_apart(tiny_sweep: LatencyResult) -> None:
    """A compiled sweep states each value's compile time on its own line, apart from the latency."""
    points = [dataclasses.replace(p, compile_s=1.5 + i) for i, p in enumerate(tiny_sweep.points)]
    compiled = dataclasses.replace(tiny_sweep, points=points, compiled=True)
    assert "torch.compile time per layers (first call; not in the latency): 1: 1.50 s, 2: 2.50 s" in (
        context_text(compiled)
    )
    assert "torch.compile" not in context_text(tiny_sweep)
    assert [row["compile_s"] for row in compiled.rows()] == [1.5, 2.5, 3.5]


def test_sweep_points_are_compared_with_the_fixed_configs_value(tiny_sweep: LatencyResult) -> None:
    """Each other value is paired round by round with the default's samples, Holm over the values."""
    default = next(p for p in tiny_sweep.points if p.value == tiny_sweep.default_value)
    others = [p for p in tiny_sweep.points if p is not default]
    assert default.vs_default is None
    base = np.asarray(default.measurement.samples_ms)
    for point, row in zip(tiny_sweep.points, tiny_sweep.rows(), strict=True):
        if point is default:
            assert row["vs_default_diff_pct"] is None
            continue
        ratios = np.asarray(point.measurement.samples_ms) / base
        expected = 100 * math.expm1(float(np.median(np.log(ratios))))  # the median of log ratios
        assert row["vs_default_diff_pct"] == pytest.approx(expected, rel=1e-9)
        assert row["vs_default_significant"] in (True, False)
        assert row["vs_default_p_adjusted"] >= row["vs_default_p_value"]
        assert point.vs_default is not None
        assert point.vs_default.family_size == len(others)


def test_against_default_finds_a_planted_shift_and_needs_the_default() -> None:
    rng = np.random.default_rng(0)
    base = 5.0 * (1 + 0.02 * rng.standard_normal(100))
    samples = {
        "x=1": list(base),
        "x=2": list(base * 1.3),
        "x=3": list(base * (1 + 0.02 * rng.standard_normal(100))),
    }
    differences = against_default(samples, "x=1")
    assert set(differences) == {"x=2", "x=3"}
    assert differences["x=2"].significant
    assert differences["x=2"].diff_pct == pytest.approx(30.0)
    assert against_default(samples, None) == {}
