"""The training recipe every toolkit training run shares: AdamW, linear warm-up, cosine decay, clipping.

A constant learning rate makes a small model's final loss depend on the seed far more than on most
architecture changes (../shared/SPEC.md measured 0.28 nats of seed-to-seed std on 2 cores); warm-up,
cosine decay to a tenth of the peak and gradient clipping at 1.0 bring it to about 0.01.
This module imports no PyTorch at import time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from toolkit.errors import ConfigError, setting

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Recipe:
    """Steps, batch shape and optimiser schedule of one training run.

    ``batch`` windows of ``seq_len`` tokens per step; ``long_every`` > 0 makes every such step take
    ``long_len``-token windows instead (the same tokens per step), so that every position of a long
    position table is trained; ``long_from``: the first step that may take them (a short-window phase
    first, then the long one: context extension, see :class:`toolkit.training.loop.Trainer`).
    ``eval_every``: steps between held-out evaluations for the curves.
    """

    steps: int = 300
    batch: int = 16
    seq_len: int = 128
    lr: float = 2e-3
    warmup: float = 0.05  # share of the steps spent warming up linearly
    final_lr_ratio: float = 0.1  # the cosine ends at this fraction of the peak
    weight_decay: float = 0.1  # on matrices only
    clip: float = 1.0  # gradient-norm clipping
    beta2: float = 0.95
    eval_every: int = 50
    long_every: int = 0
    long_len: int = 0
    long_from: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "seq_len", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"training {setting(name)} must be an integer of at least 1, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"the learning rate ({setting('lr')}) must be a positive number, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"the warm-up share must lie in [0, 1), got {self.warmup}")
        if not 0 <= self.final_lr_ratio <= 1:
            raise ConfigError(f"the final learning-rate ratio must lie in [0, 1], got {self.final_lr_ratio}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"the gradient clip must be a positive number, got {self.clip}")
        if self.long_every < 0 or (self.long_every and self.long_len < self.seq_len):
            raise ConfigError("long windows need long_every >= 1 and long_len >= seq_len")
        if not 0 <= self.long_from < max(self.steps, 1):
            raise ConfigError(
                f"long windows must start within the run's {self.steps} steps, got {self.long_from}"
            )

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.warmup * self.steps))

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to ``lr``, then cosine decay to ``final_lr_ratio * lr`` at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.final_lr_ratio + (1.0 - self.final_lr_ratio) * cosine)

    def optimizer(self, model: nn.Module) -> torch.optim.AdamW:
        """AdamW with weight decay on the matrices (embeddings included), none on biases and gains."""
        import torch

        matrices = [p for p in model.parameters() if p.dim() >= 2]
        vectors = [p for p in model.parameters() if p.dim() < 2]
        groups = [
            {"params": matrices, "weight_decay": self.weight_decay},
            {"params": vectors, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, self.beta2))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_step": self.tokens_per_step, "warmup_steps": self.warmup_steps}
