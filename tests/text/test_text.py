"""Tokenizers, token windows, batched loss against float64 GPT-2, unigram entropy and the paired bootstrap."""

from __future__ import annotations

import copy
import math
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import matched_pair
from tiny import TINY

from toolkit import ModelConfig, Transformer, signals
from toolkit.errors import DataError
from toolkit.studies.ablation import eps_variant, gelu_variant, measure_text_losses, no_scale_variant
from toolkit.text import (
    TextScore,
    loss_change,
    read_tokenizer,
    score_text,
    split_stdlib,
    token_windows,
    train_bpe,
    unigram_entropy,
)
from toolkit.text.loss import NOISE_WINDOWS, float32_loss_noise, judge_loss_changes
from toolkit.timing.decision import holm

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_TOKENIZER = ROOT / "weights" / "tokenizer.json"
shipped = read_tokenizer(SHIPPED_TOKENIZER)


def test_shipped_tokenizer_has_exactly_the_models_vocabulary() -> None:
    assert shipped.get_vocab_size(with_added_tokens=True) == 512 == ModelConfig().vocab_size
    assert sorted(shipped.get_vocab().values()) == list(range(512))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_shipped_tokenizer_round_trips_any_text(text: str) -> None:
    ids = shipped.encode(text).ids
    assert all(0 <= i < 512 for i in ids)
    assert shipped.decode(ids) == text


def test_train_bpe_gives_exactly_the_vocabulary_asked_for() -> None:
    text = (ROOT / "weights" / "heldout.txt").read_text(encoding="utf-8")[:50_000]
    for size in (260, 300, 400):
        assert train_bpe([text], size).get_vocab_size() == size


def test_gpt2_vocab_and_merges_directory_reads_as_the_same_tokenizer(tmp_path: Path) -> None:
    text = (ROOT / "weights" / "heldout.txt").read_text(encoding="utf-8")[:20_000]
    bpe = train_bpe([text], 300)
    bpe.model.save(str(tmp_path))  # vocab.json + merges.txt, as GPT-2 ships them
    assert {p.name for p in tmp_path.iterdir()} == {"vocab.json", "merges.txt"}
    again = read_tokenizer(tmp_path)
    sample = text[5_000:9_000] + " ünïcödé ✓"
    assert again.encode(sample).ids == bpe.encode(sample).ids
    assert again.decode(again.encode(sample).ids) == sample


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "does not exist"), (b"{not json", "cannot be read"), (b'{"model": 3}', "cannot be read")],
)
def test_unreadable_tokenizer_is_one_clear_error(
    tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=fragment):
        read_tokenizer(path)


def test_token_windows_are_non_overlapping_next_token_pairs() -> None:
    ids = torch.arange(11)
    windows = token_windows(ids, 3)
    assert windows.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    with pytest.raises(DataError, match="fewer than one evaluation window"):
        token_windows(torch.arange(3), 3)


def test_score_text_window_losses_equal_gpt2_float64_cross_entropy() -> None:
    model, hf = matched_pair(TINY, seed=3)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, TINY.vocab_size, (10 * 16 + 1,), generator=generator)
    windows = token_windows(ids, 16)  # 10 windows
    score = score_text(model, windows, batch_size=3)  # batches of 3, 3, 3, 1
    with torch.no_grad():
        logits = hf.double()(windows[:, :-1]).logits.numpy()  # (10, 16, V)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = windows[:, 1:].numpy()
    nll = -np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]  # (10, 16)
    np.testing.assert_allclose(score.window_nats, nll.mean(axis=1), atol=2e-5)
    assert score.tokens == 160
    assert score.perplexity == pytest.approx(math.exp(nll.mean()), rel=1e-4)


def test_unigram_entropy_equals_numpy() -> None:
    ids = torch.tensor([0, 0, 0, 1, 1, 7, 7, 7, 7, 9])
    counts = np.bincount(ids.numpy())
    p = counts[counts > 0] / counts.sum()
    assert unigram_entropy(ids) == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-12)
    assert unigram_entropy(torch.zeros(5, dtype=torch.long)) == 0.0


def _score(values: np.ndarray) -> TextScore:
    return TextScore(window=8, window_nats=values)


def test_loss_change_is_paired_by_window() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.5, 400)  # windows differ a lot from each other ...
    shifted = base + 0.01 + rng.normal(0.0, 0.002, 400)  # ... the change is small but consistent
    change = loss_change(_score(base), _score(shifted))
    assert change.delta_nats == pytest.approx(float((shifted - base).mean()))
    assert change.ci_low < change.delta_nats < change.ci_high
    assert change.significant
    assert change.ci_low > 0.009  # pairing removes the between-window spread (0.5 / sqrt(400) = 0.025)
    assert change.perplexity_ratio == pytest.approx(math.exp(change.delta_nats))


def test_loss_change_without_an_effect_is_not_significant() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(3.0, 0.5, 400)
    noise = rng.normal(0.0, 0.01, 200)
    unchanged = base + np.concatenate([noise, -noise])  # mean difference exactly zero
    change = loss_change(_score(base), _score(unchanged))
    assert abs(change.delta_nats) < 1e-12
    assert change.ci_low < 0 < change.ci_high
    assert not change.significant
    same = loss_change(_score(base), _score(base.copy()))
    assert same.delta_nats == 0
    assert not same.significant


def test_stdlib_split_holds_out_whole_modules_not_in_training() -> None:
    split = split_stdlib(seed=0, heldout_bytes=30_000)
    held = {doc.name for doc in split.heldout}
    assert held.isdisjoint(doc.name for doc in split.train)
    size = sum(len(doc.text.encode()) for doc in split.heldout)
    assert 29_000 < size <= 30_000
    assert split_stdlib(seed=0, heldout_bytes=30_000) == split  # seeded: the same split again


def test_loss_changes_judged_together_use_holm_and_the_float32_noise() -> None:
    """Six variants: a clear one stays real; a borderline one is real alone but not after Holm; a
    consistent change below the float32 noise is flagged, not called real."""
    rng = np.random.default_rng(4)
    base = rng.normal(3.0, 0.5, 400)
    clear = loss_change(_score(base), _score(base + 0.05 + rng.normal(0.0, 0.01, 400)))
    borderline = next(
        change
        for seed in range(200)
        if 0.01 < (change := loss_change(_score(base), _score(base + _noise(seed, 0.001)))).p_value < 0.04
    )
    tiny = loss_change(_score(base), _score(base + 1e-7 + rng.normal(0.0, 1e-9, 400)))
    nulls = [loss_change(_score(base), _score(base + _noise(1000 + i, 0.01, centred=True))) for i in range(3)]
    assert borderline.significant_raw
    assert tiny.significant_raw
    judged = judge_loss_changes([clear, borderline, tiny, *nulls], float32_noise_nats=1e-6)
    manual = holm([c.p_value for c in (clear, borderline, tiny, *nulls)])
    assert [j.p_adjusted for j in judged] == pytest.approx(manual)
    assert all(j.family_size == 6 for j in judged)
    clear_j, borderline_j, tiny_j = judged[:3]
    assert clear_j.significant
    assert borderline_j.significant_raw
    assert not borderline_j.significant  # p < 0.04 alone, but Holm multiplies it by up to 6
    assert tiny_j.below_float32_noise
    assert not tiny_j.significant
    assert tiny_j.to_dict()["below_float32_noise"] is True
    assert 0 < clear_j.detectable_nats < 0.01


def _noise(seed: int, scale: float, centred: bool = False) -> np.ndarray:
    values = np.random.default_rng(seed).normal(0.0, scale, 400)
    return values - values.mean() if centred else values


def test_float32_loss_noise_is_the_float32_vs_float64_window_loss_gap() -> None:
    """Measured against the model scored in float64 by the test (a copy cast to float64)."""
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    windows = token_windows(torch.randint(0, TINY.vocab_size, (600,)), 16)
    base = score_text(model, windows)
    exact = score_text(copy.deepcopy(model).double(), windows[:NOISE_WINDOWS]).window_nats
    noise = float32_loss_noise(model, windows, base)
    assert noise == pytest.approx(float(np.abs(base.window_nats[:NOISE_WINDOWS] - exact).max()))
    assert 0 < noise < 1e-4  # float32 rounding, not an effect


Progress = Callable[[int, int, str], None]


@pytest.fixture
def stop_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], Progress]:
    """A progress callback that asks the run to stop, as a SIGINT under graceful() does (without the
    real signal, whose watchdog would end the test process), when ``label`` reaches ``done``."""

    def at(label: str, done: int) -> Progress:
        def progress(position: int, total: int, description: str) -> None:
            if description == label and position == done:
                monkeypatch.setattr(signals._State, "requested", signal.SIGINT)  # undone after the test

        return progress

    return at


def test_scoring_stops_at_a_signal_with_the_windows_scored_so_far(
    stop_at: Callable[[str, int], Progress],
) -> None:
    """After a stop request the scoring ends after the batch under way: those windows, marked
    incomplete, equal the same windows of a full run."""
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    windows = token_windows(torch.randint(0, TINY.vocab_size, (400,)), 8)
    full = score_text(model, windows, batch_size=4)
    stopped = score_text(model, windows, batch_size=4, progress=stop_at("text loss", 8))
    assert full.complete
    assert not stopped.complete
    assert stopped.window_nats.size == 12  # the batch at 8 was under way when the request came
    np.testing.assert_array_equal(stopped.window_nats, full.window_nats[:12])


@pytest.mark.parametrize(("label", "kept"), [("text loss: baseline", 0), ("text loss: no-scale", 1)])
def test_text_losses_keep_only_variants_scored_completely(
    label: str, kept: int, stop_at: Callable[[str, int], Progress]
) -> None:
    """A stop request during the baseline keeps no variant; during the second variant, the first."""
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    windows = token_windows(torch.randint(0, TINY.vocab_size, (400,)), 8)
    variants = [eps_variant(1e-4), no_scale_variant(), gelu_variant("tanh")]
    changes = measure_text_losses(model, variants, windows, torch.device("cpu"), stop_at(label, 16))
    assert len(changes) == kept
