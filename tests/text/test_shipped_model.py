"""The shipped trained model: its held-out loss, computed by GPT-2 holding its weights, and the bar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import from_supplied
from safetensors.torch import load_file
from tokenizers import Tokenizer

from toolkit import ModelConfig
from toolkit.text import score_text, token_windows
from toolkit.weights import load_checkpoint

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
WINDOW = 256


@pytest.fixture(scope="module")
def heldout_ids() -> np.ndarray:
    tokenizer = Tokenizer.from_file(str(WEIGHTS / "tokenizer.json"))
    return np.array(tokenizer.encode((WEIGHTS / "heldout.txt").read_text(encoding="utf-8")).ids)


def _gpt2_nats(heldout_ids: np.ndarray, window: int) -> float:
    """The shipped model's held-out loss in non-overlapping ``window``-token windows, computed by
    GPT2LMHeadModel holding its weights (float64 sums)."""
    n = (heldout_ids.size - 1) // window
    rows = torch.from_numpy(np.stack([heldout_ids[i * window : i * window + window + 1] for i in range(n)]))
    hf = from_supplied(load_file(str(WEIGHTS / "reference_model.safetensors")), ModelConfig())
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, 32):
            batch = rows[start : start + 32]
            log_p = torch.log_softmax(hf(batch[:, :-1]).logits.double(), dim=-1)
            total += float(-log_p.gather(-1, batch[:, 1:, None]).sum())
    return total / (n * window)


def _unigram_nats(heldout_ids: np.ndarray) -> float:
    """The unigram entropy of the held-out ids (nats/token), computed here from their counts."""
    counts = np.bincount(heldout_ids)
    p = counts[counts > 0] / heldout_ids.size
    return float(-(p * np.log(p)).sum())


@pytest.fixture(scope="module")
def gpt2_heldout_nats(heldout_ids: np.ndarray) -> float:
    """The shipped model's held-out loss in the evaluation's 256-token windows, computed by GPT-2."""
    return _gpt2_nats(heldout_ids, WINDOW)


@pytest.mark.slow
def test_held_out_loss_equals_gpt2s(heldout_ids: np.ndarray, gpt2_heldout_nats: float) -> None:
    model, report = load_checkpoint(WEIGHTS / "reference_model.safetensors")
    assert report.passed
    ours = score_text(model, token_windows(torch.from_numpy(heldout_ids), WINDOW)).loss_nats
    assert ours == pytest.approx(gpt2_heldout_nats, abs=1e-4)


@pytest.mark.slow
def test_held_out_loss_is_at_most_0_6_of_the_unigram_entropy(
    heldout_ids: np.ndarray, gpt2_heldout_nats: float
) -> None:
    """Issue 13's bar, on GPT-2's loss and the unigram entropy computed here; the record states both."""
    record = json.loads((WEIGHTS / "reference_training.json").read_text())
    unigram = _unigram_nats(heldout_ids)
    assert gpt2_heldout_nats <= 0.6 * unigram, (gpt2_heldout_nats, unigram)
    assert record["unigram_nats"] == pytest.approx(unigram, rel=1e-9)
    assert record["heldout_nats"] == pytest.approx(gpt2_heldout_nats, abs=1e-4)


def test_training_record_states_the_shipped_models_figures() -> None:
    record = json.loads((WEIGHTS / "reference_training.json").read_text())
    assert record["parameters"] == 3_156_992
    assert record["config"] == ModelConfig().to_dict()


@pytest.mark.slow
def test_context_helps_the_shipped_model(heldout_ids: np.ndarray, gpt2_heldout_nats: float) -> None:
    """Issue 25's bar, on GPT-2's losses: the model's full 1024-token context is no worse than 256 tokens
    of it, and the loss in 256-token windows is at most 0.45 of the unigram entropy."""
    full = _gpt2_nats(heldout_ids, ModelConfig().max_seq_len)
    assert full <= gpt2_heldout_nats, (full, gpt2_heldout_nats)
    assert gpt2_heldout_nats <= 0.45 * _unigram_nats(heldout_ids)
    record = json.loads((WEIGHTS / "reference_training.json").read_text())
    assert record["heldout_nats_by_window"]["1024"] == pytest.approx(full, abs=1e-4)
