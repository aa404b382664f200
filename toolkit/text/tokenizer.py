"""Byte-level BPE tokenizers (Hugging Face ``tokenizers``): train one, read one, find a checkpoint's own.

A tokenizer is a ``tokenizer.json`` file, or a directory holding one, or GPT-2's ``vocab.json`` and
``merges.txt``. A checkpoint directory (Hugging Face style) or the folder of a checkpoint file that
holds one of these has its own tokenizer; the shipped checkpoint's is ``weights/tokenizer.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import DataError, setting

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
GPT2_FILES = ("vocab.json", "merges.txt")


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE with exactly ``vocab_size`` tokens (256 bytes + merges), no special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text can be encoded
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def tokenizer_in(folder: Path) -> Path | None:
    """A folder's tokenizer: its ``tokenizer.json``, else the folder itself when it has GPT-2's files."""
    if (folder / TOKENIZER_FILE).is_file():
        return folder / TOKENIZER_FILE
    if all((folder / name).is_file() for name in GPT2_FILES):
        return folder
    return None


def checkpoint_tokenizer(checkpoint: str | Path) -> Path | None:
    """The tokenizer that comes with a checkpoint: in its directory, or beside the checkpoint file."""
    path = Path(checkpoint)
    return tokenizer_in(path if path.is_dir() else path.parent)


def read_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json``, or a directory holding one or GPT-2's ``vocab.json`` + ``merges.txt``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    path = Path(path)
    hint = (
        f"pass {setting('tokenizer')} a tokenizer.json, or a directory holding one "
        "(or vocab.json + merges.txt)"
    )
    if path.is_dir():
        found = tokenizer_in(path)
        if found is None:
            raise DataError(
                f"tokenizer directory {path} holds neither {TOKENIZER_FILE} nor "
                f"{' + '.join(GPT2_FILES)}; {hint}"
            )
        path = found
    elif not path.exists():
        raise DataError(f"tokenizer {path} does not exist; {hint}")
    try:
        if path.is_dir():  # GPT-2's files: a byte-level BPE
            vocab, merges = (str(path / name) for name in GPT2_FILES)
            tokenizer = Tokenizer(models.BPE.from_file(vocab, merges))
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            return tokenizer
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exceptions for every malformed file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"tokenizer {path} cannot be read ({reason}); {hint}") from None
