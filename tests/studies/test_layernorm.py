"""The LayerNorm study: numerics against float64, memory accounting, speed rows, corpus and training."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny import TINY_TRAINING

from toolkit.errors import ConfigError, DataError
from toolkit.studies import layernorm as study
from toolkit.tables.layernorm import speed_tables

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_corpus() -> study.Corpus:
    """200 KB of the standard library's source, split by file."""
    return study.stdlib_corpus(max_bytes=200_000)


# --------------------------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------------------------


def test_reference_equals_torch_layer_norm_in_float64() -> None:
    """The float64 reference (textbook formulas + autograd) agrees with torch's float64 LayerNorm."""
    x, weight, bias, dy = study.make_inputs((16, 40), torch.float64, CPU, offset=3.0)
    y, dx, dw, db = study.reference_layer_norm(x, weight, bias, dy)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, weight, bias))
    expected = F.layer_norm(xg, (40,), wg, bg, study.EPS)
    grads = torch.autograd.grad(expected, (xg, wg, bg), dy)
    for ours, theirs in zip((y, dx, dw, db), (expected, *grads), strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def numerics() -> study.NumericsResult:
    """The numerics part of the study, run once for this module."""
    return study.check_numerics(CPU, shape=(64, 512))


def _row(result: study.NumericsResult, name: str, dtype: str, offset: float) -> study.NumericsRow:
    return next(r for r in result.rows if (r.implementation, r.dtype, r.offset) == (name, dtype, offset))


def test_numerics_covers_every_implementation_and_case(numerics: study.NumericsResult) -> None:
    """torch, each CPU backend and the one-pass formula, for 3 offsets × float32/bfloat16."""
    names = {r.implementation for r in numerics.rows}
    assert names == {"torch", "custom-torch-ops", "custom-numba", "one-pass"}
    assert len(numerics.rows) == 4 * 3 * 2
    assert all(r.bitwise_equal_pct == 100.0 for r in numerics.rows if r.implementation == "torch")


def test_custom_layer_norm_is_accurate_at_large_offsets(numerics: study.NumericsResult) -> None:
    """float32 output and gradients within 1e-3 of float64 (relative to scale), even at 1e4 + N(0,1)."""
    for name in ("custom-torch-ops", "custom-numba"):
        for offset in study.NUMERICS_OFFSETS:
            row = _row(numerics, name, "float32", offset)
            errors = (row.output_error, row.grad_input_error, row.grad_weight_error, row.grad_bias_error)
            assert max(errors) < 1e-3, (name, offset, errors)


def test_one_pass_variance_fails_at_large_offsets(numerics: study.NumericsResult) -> None:
    """E[x²] − E[x]² in float32: fine at offset 0, errors above 1e-2 at 1000, NaN or worse at 1e4."""
    assert _row(numerics, "one-pass", "float32", 0.0).output_error < 1e-5
    assert _row(numerics, "one-pass", "float32", 1e3).output_error > 1e-2
    at_1e4 = _row(numerics, "one-pass", "float32", 1e4).output_error
    assert math.isnan(at_1e4) or at_1e4 > 1e-1


def test_numerics_json_and_frame(numerics: study.NumericsResult) -> None:
    """The numerics result serialises to JSON and to a DataFrame with one row per case."""
    data = numerics.to_dict()
    assert data["shape"] == [64, 512]
    assert {"case", "output_error", "bitwise_equal_pct"} <= set(data["rows"][0])
    assert len(numerics.to_frame()) == len(numerics.rows)


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def test_memory_study_custom_keeps_no_more_than_torch() -> None:
    """Saved bytes ≤ torch's; naive autograd keeps at least twice the input beyond it; peaks positive."""
    result = study.measure_memory(CPU, shape=(256, 128))
    rows = {r.implementation: r for r in result.rows}
    assert set(rows) == {"torch", "custom-torch-ops", "custom-numba", "autograd-ops"}
    for name in ("custom-torch-ops", "custom-numba"):
        assert rows[name].saved_bytes <= rows["torch"].saved_bytes
        assert rows[name].saved_extra_bytes == 2 * 256 * 4  # mean and rstd
    assert rows["autograd-ops"].saved_extra_bytes >= 2 * rows["autograd-ops"].input_bytes * 0.99
    assert rows["custom-numba"].peak_bytes >= 2 * rows["custom-numba"].input_bytes  # y and dx
    assert rows["custom-numba"].peak_bytes <= 1.1 * rows["torch"].peak_bytes
    assert result.to_dict()["rows"][0]["saved_vs_input"] > 0


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------


def test_bytes_moved_convention() -> None:
    """Forward reads x and writes y; forward+backward also reads x and dy and writes dx."""
    assert study.bytes_moved((10, 20), torch.float32, "forward") == 2 * 10 * 20 * 4
    assert study.bytes_moved((10, 20), torch.bfloat16, "forward+backward") == 5 * 10 * 20 * 2


def test_speed_study_rows_and_bandwidth() -> None:
    """Every implementation plus the copy reference, for both passes; GB/s = bytes / median."""
    result = study.measure_speed(CPU, shapes=[(64, 32)], budget_s=0.05, backends=["numba", "torch-ops"])
    assert {(r.implementation, r.pass_name) for r in result.rows} == {
        (name, pass_name)
        for name in ("torch", "custom-numba", "custom-torch-ops", "copy")
        for pass_name in study.PASSES
    }
    for row in result.rows:
        moved = study.bytes_moved(
            (64, 32), torch.float32, "forward" if row.implementation == "copy" else row.pass_name
        )
        assert row.gb_per_s == pytest.approx(moved / (row.timing.median_ms * 1e-3) / 1e9)
        assert row.timing.n_samples >= 10
    assert set(result.copy_gb_per_s) == {"64x32 forward", "64x32 forward+backward"}
    assert all(r.pct_of_copy == pytest.approx(100.0) for r in result.rows if r.implementation == "copy")
    assert result.best_custom((64, 32), "forward") is not None
    assert "allocator" in result.to_dict()
    for row in (r for r in result.rows if r.implementation.startswith("custom")):
        assert math.isfinite(row.detectable_pct)  # every comparison states what it could have detected
        assert row.detectable_pct > 0
        assert row.significant <= row.significant_raw  # Holm only takes verdicts away
        assert 0 <= row.p_adjusted <= 1
    captions = " ".join(str(table.caption) for table in speed_tables(result))
    assert "Detectable (forward): ±" in captions
    assert "Detectable (forward+backward): ±" in captions


def test_speed_refuses_unavailable_backend() -> None:
    """Timing a backend that cannot run on the device is a ConfigError naming the available ones."""
    with pytest.raises(ConfigError, match="not available"):
        study.measure_speed(CPU, shapes=[(8, 8)], backends=["triton"])


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def test_stdlib_corpus_is_deterministic_and_split_by_file(small_corpus: study.Corpus) -> None:
    """The same bytes on every call; train and validation come from different files."""
    again = study.stdlib_corpus(max_bytes=200_000)
    assert torch.equal(small_corpus.train, again.train)
    assert torch.equal(small_corpus.validation, again.validation)
    assert small_corpus.files >= 10
    assert small_corpus.train.numel() > 5 * small_corpus.validation.numel() > 0
    assert all("site-packages" not in p.parts for p in study.stdlib_files())


def test_text_corpus_splits_the_tail_and_reports_bad_files(tmp_path: Path) -> None:
    """A text file's last 10% is validation; a missing file is a DataError."""
    path = tmp_path / "text.txt"
    path.write_bytes(bytes(range(100)) * 10)
    corpus = study.text_corpus(path)
    assert corpus.train.numel() == 900
    assert corpus.validation.tolist() == list(bytes(range(100)))
    with pytest.raises(DataError, match="does not exist"):
        study.text_corpus(tmp_path / "missing.txt")
    (tmp_path / "tiny.txt").write_bytes(b"abc")
    with pytest.raises(DataError, match="fewer than one window"):
        study.train_norms(CPU, TINY_TRAINING, study.text_corpus(tmp_path / "tiny.txt"))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_steps_to_fraction_and_detrended_std_on_known_curves() -> None:
    """An exponential decay reaches 90% of its improvement where the formula says; a line has no noise."""
    steps = np.arange(200)
    losses = 1.0 + 4.0 * np.exp(-steps / 20.0)
    found = study.steps_to_fraction(losses.tolist())
    assert 40 <= found <= 60  # 90% of the drop at t = 20 ln 10 ≈ 46, plus the smoothing window's lag
    assert study.detrended_std(np.linspace(3, 2, 100).tolist()) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    noisy = np.linspace(3, 2, 1000) + rng.normal(0, 0.1, 1000)
    assert study.detrended_std(noisy.tolist()) == pytest.approx(0.1, rel=0.2)
    assert math.isnan(study.steps_to_fraction([2.0, 2.0, 2.5]))


def test_training_settings_are_validated() -> None:
    """Unknown norms, impossible sizes and a negative learning rate are refused."""
    with pytest.raises(ConfigError, match="unknown norm"):
        study.TrainingSettings(norms=("layer",))
    with pytest.raises(ConfigError, match="divisible"):
        study.TrainingSettings(model=TINY_TRAINING.model.replace(d_model=30, n_heads=4))
    with pytest.raises(ConfigError, match="learning rate"):
        study.TrainingSettings(lr=-1.0)


def test_training_lowers_loss_and_custom_tracks_torch(small_corpus: study.Corpus) -> None:
    """A tiny run lowers validation loss; custom LayerNorm follows torch's run step for step."""
    settings = dataclasses.replace(TINY_TRAINING, norms=("torch", "custom", "none", "batch"))
    result = study.train_norms(CPU, settings, small_corpus)
    assert [r.norm for r in result.runs] == ["torch", "custom", "none", "batch"]
    torch_run, custom_run = result.run("torch"), result.run("custom")
    assert torch_run is not None
    assert custom_run is not None
    assert torch_run.val_losses[-1] < torch_run.val_losses[0] - 0.3
    np.testing.assert_allclose(custom_run.train_losses, torch_run.train_losses, rtol=1e-4)
    for run in result.runs:
        assert len(run.train_losses) == settings.steps
        assert run.val_steps == [0, 6, 12]
        assert run.peak_memory_bytes > 0
        assert run.correlation_before.shape == (32, 32)
        assert set(run.grad_norms) == {"block 0", "block 1"}
    none_run = result.run("none")
    assert none_run is not None
    # Identity: the "normalised" activations are the raw residual stream, correlations unchanged.
    np.testing.assert_allclose(none_run.correlation_after, none_run.correlation_before)
    assert result.pct_vs_torch("torch", "final_val_loss") == 0.0
    data = result.to_dict()
    assert data["corpus"]["train_bytes"] == small_corpus.train.numel()
    assert len(data["runs"][0]["train_losses"]) == settings.steps
    assert list(result.to_frame()["norm"]) == ["torch", "custom", "none", "batch"]
    # over seeds: every norm once per seed, judged against torch's LayerNorm paired by seed
    summary = {row["norm"]: row for row in data["over_seeds"]}
    assert data["baseline"] == "torch"
    assert "delta_nats" not in summary["torch"]
    assert set(summary["custom"]["seeds"]) == {str(s) for s in settings.seed_list}
    assert summary["torch"]["seeds"]["0"] == pytest.approx(torch_run.final_val_loss)
    custom = summary["custom"]
    deltas = [custom["seeds"][k] - summary["torch"]["seeds"][k] for k in custom["seeds"]]
    assert custom["delta_nats"] == pytest.approx(float(np.mean(deltas)))
    assert abs(custom["delta_nats"]) < 1e-3, "the same function trains to the same loss"
    assert custom["ci95"][0] <= custom["delta_nats"] <= custom["ci95"][1]


# --------------------------------------------------------------------------------------------
# The same study of RMSNorm (--norm rms)
# --------------------------------------------------------------------------------------------


def test_rms_reference_equals_torch_rms_norm_in_float64() -> None:
    """The float64 RMSNorm reference agrees with torch's float64 rms_norm and its autograd."""
    x, weight, bias, dy = study.make_inputs((16, 40), torch.float64, CPU, offset=3.0)
    y, dx, dw = study.reference_rms_norm(x, weight, bias, dy)
    xg, wg = (t.clone().requires_grad_() for t in (x, weight))
    expected = F.rms_norm(xg, (40,), wg, study.EPS)
    grads = torch.autograd.grad(expected, (xg, wg), dy)
    for ours, theirs in zip((y, dx, dw), (expected, *grads), strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-10, atol=1e-10)


def test_rms_numerics_memory_and_speed() -> None:
    """--norm rms: torch's RMSNorm and the custom one on each backend, no bias gradient, the custom
    RMSNorm as accurate as torch's and keeping the input and one float per row; speed rows carry
    torch's LayerNorm beside them."""
    numerics = study.check_numerics(CPU, shape=(64, 512), norm="rms")
    assert numerics.norm == "rms"
    assert {r.implementation for r in numerics.rows} == {"torch", "custom-torch-ops", "custom-numba"}
    for row in numerics.rows:
        assert math.isnan(row.grad_bias_error)
        torch_row = _row(numerics, "torch", row.dtype, row.offset)
        unit = torch.finfo(getattr(torch, row.dtype)).eps
        for name in ("output_error", "grad_input_error", "grad_weight_error"):
            assert getattr(row, name) <= 2 * getattr(torch_row, name) + 4 * unit, (row.implementation, name)
    memory = study.measure_memory(CPU, shape=(256, 128), norm="rms")
    rows = {r.implementation: r for r in memory.rows}
    assert rows["custom-numba"].saved_extra_bytes == 256 * 4  # rstd only
    assert rows["custom-numba"].saved_bytes <= rows["torch"].saved_bytes
    speed = study.measure_speed(CPU, shapes=[(64, 32)], budget_s=0.05, norm="rms")
    assert {r.implementation for r in speed.rows} == {"torch", "torch-layernorm", "custom-numba", "copy"}
    assert speed.to_dict()["norm"] == "rms"
    assert "RMSNorm speed" in str(speed_tables(speed)[0].title)
