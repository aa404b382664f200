"""How a study times forward passes, as one frozen settings object validated once when built.

The latency sweeps and the ablation's latency run take a :class:`ForwardTiming` instead of
repeating the same bundle of keywords (device, dtype, batch, sequence length, budget, target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toolkit.config import ModelConfig
from toolkit.errors import InputError, setting

CPU = torch.device("cpu")


@dataclass(frozen=True)
class ForwardTiming:
    """Where, in what precision and on what input forward passes are timed, and for how long.

    ``seq_len`` None means the model's ``max_seq_len``. ``budget_s`` is seconds of timing (per swept
    value in a latency sweep; for the whole interleaved run in an ablation); 0 times only the
    minimum number of rounds. Timing stops early once every median's 95% CI is within
    ±``target_rel_ci``.
    """

    device: torch.device = CPU
    dtype: torch.dtype = torch.float32
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
