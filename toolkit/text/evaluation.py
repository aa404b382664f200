"""Which text a command scores, with which tokenizer: the user's choice, else the checkpoint's own.

A checkpoint has a known tokenizer when one lies in its directory or beside its file (the shipped
checkpoint's ``weights/tokenizer.json``), or when ``tokenizer`` is given. The default text is the
shipped held-out text (``weights/heldout.txt``); ``text`` scores the user's own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.config import ModelConfig
from toolkit.errors import DataError, setting
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.text.corpus import HELDOUT_FILE, read_text
from toolkit.text.loss import DEFAULT_WINDOW, score_text, token_windows, unigram_entropy
from toolkit.text.tokenizer import checkpoint_tokenizer, read_tokenizer
from toolkit.weights.files import shipped_folder

NO_TOKENIZER = (
    f"pass {setting('tokenizer')} with a tokenizer.json (or a directory holding one, or GPT-2's vocab.json "
    "+ merges.txt), or put one beside the checkpoint"
)


@dataclass(frozen=True)
class EvalText:
    """Token windows of one text under one tokenizer, ready to score."""

    path: Path
    tokenizer: Path
    windows: torch.Tensor  # (n, window + 1) int64
    unigram_nats: float
    text_tokens: int

    @property
    def window(self) -> int:
        return int(self.windows.shape[1]) - 1

    @property
    def tokens(self) -> int:
        """Next-token predictions scored: windows × window."""
        return int(self.windows.shape[0]) * self.window

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "tokenizer": str(self.tokenizer),
            "text_tokens": self.text_tokens,
            "tokens": self.tokens,
            "windows": int(self.windows.shape[0]),
            "window": self.window,
            "unigram_nats": self.unigram_nats,
        }


def default_text(checkpoint: Path) -> Path | None:
    """The held-out text beside the checkpoint, else the shipped one."""
    for folder in (checkpoint if checkpoint.is_dir() else checkpoint.parent, shipped_folder()):
        if folder is not None and (folder / HELDOUT_FILE).is_file():
            return folder / HELDOUT_FILE
    return None


def prepare_text(
    config: ModelConfig,
    checkpoint: Path,
    text: Path | None = None,
    tokenizer: Path | None = None,
    encoding: str = "utf-8",
    window: int | None = None,
) -> tuple[EvalText | None, str | None]:
    """The text to score and why there is none (a note), or an error for a request that cannot be met."""
    tokenizer_path = tokenizer if tokenizer is not None else checkpoint_tokenizer(checkpoint)
    if tokenizer_path is None:
        if text is not None:
            raise DataError(
                f"{setting('text')} needs a tokenizer, and checkpoint {checkpoint} has none; {NO_TOKENIZER}"
            )
        return None, f"no tokenizer for {checkpoint}: loss on text not measured; {NO_TOKENIZER}"
    if window is not None and window > config.max_seq_len:
        raise DataError(
            f"{setting('text_window')} {window} exceeds the model's max_seq_len={config.max_seq_len}; "
            f"pass at most {config.max_seq_len}"
        )
    text_path = text if text is not None else default_text(checkpoint)
    if text_path is None:
        return (
            None,
            f"no {HELDOUT_FILE} beside {checkpoint}: loss on text not measured; pass {setting('text')} FILE",
        )
    content = read_text(text_path, encoding)  # refuse a bad text before reading the tokenizer
    bpe = read_tokenizer(tokenizer_path)
    size = bpe.get_vocab_size(with_added_tokens=True)
    if size > config.vocab_size:
        raise DataError(
            f"tokenizer {tokenizer_path} has {size:,} tokens but the model's vocab_size is "
            f"{config.vocab_size:,}; pass {setting('tokenizer')} with the model's own tokenizer"
        )
    ids = torch.tensor(bpe.encode(content).ids, dtype=torch.long)
    windows = token_windows(ids, window if window is not None else min(DEFAULT_WINDOW, config.max_seq_len))
    return EvalText(
        Path(text_path), Path(tokenizer_path), windows, unigram_entropy(ids), int(ids.numel())
    ), None


def text_loss_report(
    model: Transformer, text: EvalText, progress: ProgressCallback | None = None
) -> dict[str, Any] | None:
    """What the model knows about ``text``: its loss (with a CI over windows), perplexity, and the
    unigram baseline (the loss of predicting every token by its frequency in the text); None when a
    SIGINT / SIGTERM stopped the scoring (the loss of part of a text is not the text's)."""
    score = score_text(model, text.windows, progress=progress, label=f"loss on {text.path.name}")
    if not score.complete:
        return None
    low, high = score.loss_ci()
    return {
        **text.describe(),
        "loss_nats": score.loss_nats,
        "loss_ci_low": low,
        "loss_ci_high": high,
        "perplexity": score.perplexity,
        "loss_over_unigram": score.loss_nats / text.unigram_nats,
    }
