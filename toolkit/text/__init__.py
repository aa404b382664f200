"""Real text for the models: tokenizers, the standard-library corpus and held-out text, next-token loss."""

from toolkit.text.corpus import (
    HELDOUT_BYTES,
    HELDOUT_FILE,
    Document,
    StdlibSplit,
    read_text,
    split_stdlib,
    stdlib_files,
    stdlib_root,
)
from toolkit.text.loss import (
    DEFAULT_WINDOW,
    LossChange,
    TextScore,
    loss_change,
    score_text,
    token_windows,
    unigram_entropy,
)
from toolkit.text.tokenizer import (
    TOKENIZER_FILE,
    checkpoint_tokenizer,
    read_tokenizer,
    tokenizer_in,
    train_bpe,
)

HELDOUT_NOTICE = "HELDOUT-NOTICE.txt"

__all__ = [
    "DEFAULT_WINDOW",
    "HELDOUT_BYTES",
    "HELDOUT_FILE",
    "HELDOUT_NOTICE",
    "TOKENIZER_FILE",
    "Document",
    "LossChange",
    "StdlibSplit",
    "TextScore",
    "checkpoint_tokenizer",
    "loss_change",
    "read_text",
    "read_tokenizer",
    "score_text",
    "split_stdlib",
    "stdlib_files",
    "stdlib_root",
    "token_windows",
    "tokenizer_in",
    "train_bpe",
    "unigram_entropy",
]
