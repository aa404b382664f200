"""Next-token loss on real text: windows of token ids, batched scoring, and paired loss differences.

A text of N tokens gives ``(N - 1) // window`` non-overlapping windows; each scores ``window``
next-token predictions (inputs ids[i·w : (i+1)·w], targets one token later), so every window has
the same weight and a window's mean loss is the unit the bootstrap resamples. Losses are in nats
per token (natural log), accumulated in float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.errors import DataError, setting
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.timing.stats import CONFIDENCE, bootstrap_ci

DEFAULT_WINDOW = 256
EVAL_BATCH = 16


def token_windows(ids: torch.Tensor, window: int) -> torch.Tensor:
    """``[n, window + 1]`` rows of ``ids``, each starting where the previous one's inputs end."""
    if window < 1:
        raise DataError(f"{setting('text_window')} must be at least 1, got {window}")
    count = (ids.numel() - 1) // window
    if count < 1:
        raise DataError(
            f"the text has {ids.numel()} tokens, fewer than one evaluation window needs ({window + 1}); "
            f"give a longer {setting('text')} or a smaller {setting('text_window')}"
        )
    return ids[: count * window + 1].unfold(0, window + 1, window)  # (n, window + 1), a view


def unigram_entropy(ids: torch.Tensor) -> float:
    """Entropy (nats/token) of the text's own token frequencies: the loss of the best context-free guess."""
    counts = torch.bincount(ids.reshape(-1)).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


@dataclass(frozen=True)
class TextScore:
    """One model's loss on one text: the per-window losses and what they add up to."""

    window: int
    window_nats: np.ndarray  # [n windows] float64

    @property
    def tokens(self) -> int:
        """Next-token predictions scored: windows × window."""
        return int(self.window_nats.size) * self.window

    @property
    def loss_nats(self) -> float:
        return float(self.window_nats.mean())

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss_nats)

    def loss_ci(self) -> tuple[float, float]:
        """95% percentile bootstrap CI of the mean loss, resampling windows."""
        return bootstrap_ci(self.window_nats, statistic=_mean)


@torch.inference_mode()
def score_text(
    model: Transformer,
    windows: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    progress: ProgressCallback | None = None,
    label: str = "text loss",
) -> TextScore:
    """Mean next-token loss (nats) of each window, ``batch_size`` windows per forward pass."""
    parameter = next(model.parameters())
    count = windows.shape[0]
    losses = np.empty(count, dtype=np.float64)
    for start in range(0, count, batch_size):
        if progress is not None:
            progress(start, count, label)
        rows = windows[start : start + batch_size].to(parameter.device)  # (b, w + 1)
        logits = model(rows[:, :-1])  # (b, w, V)
        nats = F.cross_entropy(logits.transpose(1, 2).float(), rows[:, 1:], reduction="none")  # (b, w)
        losses[start : start + rows.shape[0]] = nats.double().mean(dim=1).cpu().numpy()
    if progress is not None:
        progress(count, count, label)
    return TextScore(window=int(windows.shape[1]) - 1, window_nats=losses)


@dataclass(frozen=True)
class LossChange:
    """A variant's loss against the base's on the same windows: the mean paired difference and its CI.

    ``ci_low`` / ``ci_high``: 95% percentile bootstrap over windows of the mean of (variant - base);
    ``significant``: the CI excludes 0. ``perplexity_ratio`` = exp(delta).
    """

    base_nats: float
    variant_nats: float
    delta_nats: float
    ci_low: float
    ci_high: float
    significant: bool
    perplexity_ratio: float
    tokens: int
    windows: int
    confidence: float = CONFIDENCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def loss_change(base: TextScore, variant: TextScore) -> LossChange:
    """Paired comparison of two scores of the same windows (variant minus base)."""
    if base.window_nats.shape != variant.window_nats.shape:
        raise ValueError("loss_change needs the two models scored on the same windows")
    deltas = variant.window_nats - base.window_nats
    delta = float(deltas.mean())
    low, high = bootstrap_ci(deltas, statistic=_mean)
    return LossChange(
        base_nats=base.loss_nats,
        variant_nats=variant.loss_nats,
        delta_nats=delta,
        ci_low=low,
        ci_high=high,
        significant=bool(low > 0 or high < 0),
        perplexity_ratio=math.exp(delta),
        tokens=base.tokens,
        windows=int(deltas.size),
    )


def _mean(resamples: np.ndarray) -> np.ndarray:
    return resamples.mean(axis=-1)
