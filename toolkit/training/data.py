"""The text a training run learns from and is scored on, as token ids.

Default: the standard library's training modules (those not in the shipped held-out text, the split
``scripts/train_reference.py`` made), at most ``max_bytes`` of them, and the shipped held-out text,
both under the shipped tokenizer. With a file of the user's (``--text``): its first 90% of tokens
train, the last 10% are held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import DataError, setting
from toolkit.text.corpus import HELDOUT_FILE, read_text, split_stdlib
from toolkit.text.loss import unigram_entropy
from toolkit.text.tokenizer import TOKENIZER_FILE, read_tokenizer
from toolkit.weights.files import shipped_folder

DEFAULT_TRAIN_BYTES = 4 * 1024 * 1024
"""Training text the default run tokenizes (about 1.9 M tokens under the shipped tokenizer)."""
HELDOUT_SHARE = 0.1


@dataclass(frozen=True)
class TrainingText:
    """Training and held-out token ids under one tokenizer, and where they came from."""

    train: torch.Tensor  # int64 [N]
    heldout: torch.Tensor  # int64 [M]
    source: str
    heldout_source: str
    tokenizer: Path
    vocab_size: int

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "heldout_source": self.heldout_source,
            "tokenizer": str(self.tokenizer),
            "vocab_size": self.vocab_size,
            "train_tokens": int(self.train.numel()),
            "heldout_tokens": int(self.heldout.numel()),
            "heldout_unigram_nats": unigram_entropy(self.heldout),
        }


def _ids(encodings: list[Any]) -> torch.Tensor:
    return torch.tensor([token for encoding in encodings for token in encoding.ids], dtype=torch.long)


def training_text(
    text: Path | None = None,
    tokenizer: Path | None = None,
    encoding: str = "utf-8",
    max_bytes: int = DEFAULT_TRAIN_BYTES,
) -> TrainingText:
    """The default corpus (standard library + shipped held-out text), or ``text`` split 90/10."""
    shipped = shipped_folder()
    if shipped is None and (text is None or tokenizer is None):
        raise DataError(
            f"the shipped weights/ folder (tokenizer and held-out text) is not here; run from the toolkit's "
            f"checkout, or pass {setting('text')} and {setting('tokenizer')}"
        )
    tokenizer_path = tokenizer if tokenizer is not None else shipped / TOKENIZER_FILE  # type: ignore[operator]
    bpe = read_tokenizer(tokenizer_path)
    vocab_size = bpe.get_vocab_size()
    if text is None:
        heldout_path = shipped / HELDOUT_FILE  # type: ignore[operator]
        heldout_text = read_text(heldout_path)
        kept, size = [], 0
        for document in split_stdlib().train:
            if size >= max_bytes:
                break
            kept.append(document.text)
            size += len(document.text.encode())
        train = _ids(bpe.encode_batch(kept))
        heldout = _ids([bpe.encode(heldout_text)])
        source = f"Python standard library, {len(kept)} training modules ({size:,} bytes)"
        return TrainingText(train, heldout, source, str(heldout_path), tokenizer_path, vocab_size)
    ids = _ids([bpe.encode(read_text(text, encoding))])
    cut = int(ids.numel() * (1.0 - HELDOUT_SHARE))
    if cut < 2 or ids.numel() - cut < 2:
        raise DataError(
            f"{text} has {ids.numel()} tokens, too few to train on and hold 10% out; give a longer "
            f"{setting('text')}"
        )
    return TrainingText(
        ids[:cut],
        ids[cut:],
        f"{text} (first 90% of tokens)",
        f"{text} (last 10%)",
        tokenizer_path,
        vocab_size,
    )
