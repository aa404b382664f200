"""The tiny model every fast test uses, as a config and as the command-line flags that build it."""

from __future__ import annotations

from toolkit import ModelConfig
from toolkit.studies.settings import TrainingSettings

TINY = ModelConfig(vocab_size=61, max_seq_len=32, d_model=24, n_heads=3, n_layers=2, d_mlp=40)

_FLAGS = {
    "--vocab": TINY.vocab_size,
    "--max-seq-len": TINY.max_seq_len,
    "--d-model": TINY.d_model,
    "--heads": TINY.n_heads,
    "--layers": TINY.n_layers,
    "--mlp": TINY.d_mlp,
}
TINY_FLAGS = [item for flag, value in _FLAGS.items() for item in (flag, str(value))]
"""The model flags of the commands that build ``TINY``."""

TINY_TRAIN = [
    "--steps",
    "4",
    "--batch",
    "2",
    "--seq-len",
    "8",
    "--d-model",
    "16",
    "--mlp",
    "32",
    "--heads",
    "2",
]
"""The training flags of ``layernorm-compare`` for a tiny byte-level GPT trained for 4 steps."""

TINY_TRAINING = TrainingSettings(
    model=ModelConfig(vocab_size=256, max_seq_len=16, d_model=32, n_heads=2, n_layers=2, d_mlp=64),
    steps=12,
    batch=4,
    lr=3e-3,
    eval_every=6,
    eval_batches=2,
)
"""The byte-level training run the LayerNorm study and plot tests share (seconds on 2 cores)."""
