"""How studies are set up: frozen settings objects validated once when built, and the choices and
defaults the commands' help shows.

The latency sweeps and the ablation's latency run take a :class:`ForwardTiming` instead of
repeating the same bundle of keywords (device, dtype, batch, sequence length, budget, target); the
LayerNorm study's training runs take a :class:`TrainingSettings`. This module imports no PyTorch
(its torch defaults are made on first use), so that ``toolkit --help`` and argument errors stay
instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.config import ModelConfig, divisors
from toolkit.errors import ConfigError, InputError, setting

if TYPE_CHECKING:
    import torch

    from toolkit.training.recipe import Recipe

VARY_CHOICES = ("seq-len", "vocab", "d-model", "heads", "layers", "mlp", "batch")
"""The sweeps ``--vary all`` runs."""
SWEEP_CHOICES = (*VARY_CHOICES, "kv-heads")
"""What a latency sweep can vary: also the key/value heads (grouped-query attention), asked for by name."""

DEFAULT_VALUES: dict[str, tuple[int, ...]] = {
    "seq-len": (64, 128, 256, 512, 1024, 2048, 4096),
    "vocab": (256, 512, 1024, 2048, 4096, 8192),
    "d-model": (64, 128, 256, 512, 1024),
    "heads": (1, 2, 4, 8, 16, 32),
    "layers": (1, 2, 3, 4, 6, 8),
    "mlp": (256, 512, 1024, 1280, 2048, 4096),
    "batch": (1, 2, 4, 8),
}
"""The values each sweep times when none are given (seq-len: those up to max_seq_len, see
:func:`default_values`)."""


def default_values(vary: str, max_seq_len: int, n_heads: int = 1) -> tuple[int, ...]:
    """The values a sweep times when none are given (kv-heads: the divisors of ``n_heads``).

    A length never exceeds the model's position table (``max_seq_len``), in a sweep as anywhere:
    the seq-len sweep takes the default lengths that fit, or, when fewer than two fit, the
    sixteenth, eighth, quarter, half and whole of ``max_seq_len``.
    """
    if vary == "kv-heads":
        return tuple(divisors(n_heads))
    if vary != "seq-len":
        return DEFAULT_VALUES.get(vary, ())
    fitting = tuple(v for v in DEFAULT_VALUES[vary] if v <= max_seq_len)
    if len(fitting) >= 2:
        return fitting
    return tuple(sorted({max(1, max_seq_len >> shift) for shift in (4, 3, 2, 1, 0)}))


DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((4096, 256), (16384, 1024), (8192, 4096))
"""The (rows M, row size N) grid the LayerNorm speed study times."""

TRAIN_NORMS = ("torch", "custom", "rms", "none", "batch")
BYTE_VOCAB = 256
TRAINING_MODEL = ModelConfig(
    vocab_size=BYTE_VOCAB, max_seq_len=64, d_model=128, n_heads=2, n_layers=2, d_mlp=512
)
"""The small byte-level GPT every normalisation trains."""
TRAINED_BASE = ModelConfig(vocab_size=512, max_seq_len=128, d_model=128, n_heads=4, n_layers=2, d_mlp=512)
"""The base ``ablate --train`` trains from scratch by default (vocab: the shipped tokenizer's; about
0.5 M parameters): small enough that the classic suite over 3 seeds takes minutes on 2 CPU cores."""


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


def _float32() -> torch.dtype:
    import torch

    return torch.float32


@dataclass(frozen=True)
class ForwardTiming:
    """Where, in what precision and on what input forward passes are timed, and for how long.

    ``seq_len`` None means the model's ``max_seq_len``. ``budget_s`` is seconds of timing (per swept
    value in a latency sweep; for the whole interleaved run in an ablation); 0 times only the
    minimum number of rounds. Timing stops early once every median's 95% CI is within
    ±``target_rel_ci``.
    """

    device: torch.device = field(default_factory=_cpu)
    dtype: torch.dtype = field(default_factory=_float32)
    batch: int = 1
    seq_len: int | None = None
    budget_s: float = 8.0
    target_rel_ci: float = 0.02
    warmup: int = 3
    compile: bool = False

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise InputError(f"timing batch must be at least 1, got {self.batch}")
        if self.seq_len is not None and self.seq_len < 1:
            raise InputError(f"{setting('seq_len')} must be at least 1, got {self.seq_len}")
        if not (math.isfinite(self.budget_s) and self.budget_s >= 0):
            raise InputError(f"timing budget must be a non-negative number of seconds, got {self.budget_s}")
        if not 0 < self.target_rel_ci < 1:
            raise InputError(f"the CI target must lie between 0 and 1 (a fraction), got {self.target_rel_ci}")
        if self.warmup < 0:
            raise InputError(f"warm-up calls must be at least 0, got {self.warmup}")

    def seq_len_for(self, config: ModelConfig) -> int:
        """The sequence length to time on ``config``: refused when the model cannot take it."""
        return config.sequence_length(self.seq_len)


@dataclass(frozen=True)
class TrainingSettings:
    """The small GPT (``model``; its ``norm`` is set per run) and its schedule; the same for every norm.

    The model reads bytes, so its vocabulary is 256; its ``max_seq_len`` is the training window.
    """

    model: ModelConfig = TRAINING_MODEL
    steps: int = 150
    batch: int = 16
    lr: float = 2e-3
    eval_every: int = 25
    eval_batches: int = 8
    seed: int = 0
    norms: tuple[str, ...] = TRAIN_NORMS
    seeds: int = 3  # seed, seed + 1, ...: the comparison over seeds

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "eval_every", "eval_batches", "seeds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training {name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        unknown = [n for n in self.norms if n not in TRAIN_NORMS]
        if unknown or not self.norms:
            raise ConfigError(
                f"unknown norm(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(TRAIN_NORMS)}"
            )
        if self.model.vocab_size != BYTE_VOCAB:
            raise ConfigError(
                f"the training model reads bytes, so its vocab_size must be {BYTE_VOCAB}, "
                f"got {self.model.vocab_size}"
            )

    @property
    def seq_len(self) -> int:
        """Bytes per training window: the model's ``max_seq_len``."""
        return self.model.max_seq_len

    def model_config(self, norm: str) -> ModelConfig:
        return self.model.replace(norm=norm)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    @property
    def recipe(self) -> Recipe:
        """The toolkit trainer's recipe (warm-up, cosine decay, clipping) at this study's sizes."""
        from toolkit.training.recipe import Recipe

        return Recipe(steps=self.steps, batch=self.batch, seq_len=self.seq_len, lr=self.lr,
                      eval_every=self.eval_every)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        model = self.model
        return {
            "steps": self.steps,
            "batch": self.batch,
            "seq_len": model.max_seq_len,
            "d_model": model.d_model,
            "n_heads": model.n_heads,
            "n_layers": model.n_layers,
            "d_mlp": model.d_mlp,
            "lr": self.lr,
            "eval_every": self.eval_every,
            "eval_batches": self.eval_batches,
            "seed": self.seed,
            "seeds": self.seeds,
            "norms": list(self.norms),
            "model": model.to_dict(),
        }
