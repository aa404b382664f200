"""Next-token loss on real text: windows of token ids, batched scoring, and paired loss differences.

A text of N tokens gives ``(N - 1) // window`` non-overlapping windows; each scores ``window``
next-token predictions (inputs ids[i·w : (i+1)·w], targets one token later), so every window has
the same weight and a window's mean loss is the unit the bootstrap resamples. Losses are in nats
per token (natural log), accumulated in float64.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.errors import DataError, setting
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.signals import stop_requested
from toolkit.timing.decision import ALPHA, CONFIDENCE, bootstrap_p, detectable_effect, holm
from toolkit.timing.stats import bootstrap_ci, bootstrap_statistics, percentile_ci

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
    """One model's loss on one text: the per-window losses and what they add up to.

    ``complete`` is False when a SIGINT / SIGTERM stopped the scoring: the windows scored so far.
    """

    window: int
    window_nats: np.ndarray  # [n windows] float64
    complete: bool = True

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
    """Mean next-token loss (nats) of each window, ``batch_size`` windows per forward pass (after a
    SIGINT / SIGTERM under :func:`toolkit.signals.graceful`: the windows scored so far, incomplete)."""
    parameter = next(model.parameters())
    count = windows.shape[0]
    losses = np.empty(count, dtype=np.float64)
    for start in range(0, count, batch_size):
        if start and stop_requested() is not None:
            return TextScore(window=int(windows.shape[1]) - 1, window_nats=losses[:start], complete=False)
        if progress is not None:
            progress(start, count, label)
        rows = windows[start : start + batch_size].to(parameter.device)  # (b, w + 1)
        logits = model(rows[:, :-1])  # (b, w, V)
        exact = logits.transpose(1, 2).to(torch.promote_types(logits.dtype, torch.float32))  # (b, V, w)
        nats = F.cross_entropy(exact, rows[:, 1:], reduction="none")  # (b, w)
        losses[start : start + rows.shape[0]] = nats.double().mean(dim=1).cpu().numpy()
    if progress is not None:
        progress(count, count, label)
    return TextScore(window=int(windows.shape[1]) - 1, window_nats=losses)


@dataclass(frozen=True)
class LossChange:
    """A variant's loss against the base's on the same windows: the mean paired difference and its CI.

    ``ci_low`` / ``ci_high``: 95% percentile bootstrap over windows of the mean of (variant - base),
    ``p_value`` its dual; ``significant_raw``: the CI excludes 0. ``significant``: also after Holm's
    adjustment over the variants compared together (``p_adjusted``) and larger than the float32
    noise of the loss (``float32_noise_nats``: the largest |float32 - float64| window loss of the
    base model on the first windows; a smaller change is ``below_float32_noise``, not an effect).
    ``detectable_nats``: the smallest change this many windows would find 80% of the time.
    ``perplexity_ratio`` = exp(delta).
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
    p_value: float = math.nan
    p_adjusted: float = math.nan
    significant_raw: bool = False
    detectable_nats: float = math.nan
    float32_noise_nats: float = math.nan
    family_size: int = 1

    @property
    def below_float32_noise(self) -> bool:
        return abs(self.delta_nats) < self.float32_noise_nats

    def judged(self, p_adjusted: float, family_size: int, float32_noise_nats: float) -> LossChange:
        """This change with its verdict after Holm's adjustment and the float32-noise check."""
        judged = replace(
            self, p_adjusted=p_adjusted, family_size=family_size, float32_noise_nats=float32_noise_nats
        )
        significant = self.significant_raw and p_adjusted <= ALPHA and not judged.below_float32_noise
        return replace(judged, significant=significant)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "below_float32_noise": self.below_float32_noise}


def loss_change(base: TextScore, variant: TextScore) -> LossChange:
    """Paired comparison of two scores of the same windows (variant minus base), on its own."""
    if base.window_nats.shape != variant.window_nats.shape:
        raise ValueError("loss_change needs the two models scored on the same windows")
    deltas = variant.window_nats - base.window_nats
    delta = float(deltas.mean())
    resampled = bootstrap_statistics(deltas, statistic=_mean)
    low, high = percentile_ci(resampled)
    p_value = bootstrap_p(resampled)
    significant = bool(low > 0 or high < 0)
    return LossChange(
        base_nats=base.loss_nats,
        variant_nats=variant.loss_nats,
        delta_nats=delta,
        ci_low=low,
        ci_high=high,
        significant=significant,
        perplexity_ratio=math.exp(delta),
        tokens=base.tokens,
        windows=int(deltas.size),
        p_value=p_value,
        p_adjusted=p_value,
        significant_raw=significant,
        detectable_nats=detectable_effect(low, high),
    )


def judge_loss_changes(changes: Sequence[LossChange], float32_noise_nats: float) -> list[LossChange]:
    """The verdicts of changes measured together: Holm over all of them, and the float32 noise."""
    adjusted = holm([change.p_value for change in changes])
    return [
        change.judged(p, len(changes), float32_noise_nats)
        for change, p in zip(changes, adjusted, strict=True)
    ]


NOISE_WINDOWS = 16  # windows scored in float64 too, to measure the float32 noise of the loss


def float32_loss_noise(model: Transformer, windows: torch.Tensor, base: TextScore) -> float:
    """The largest |float32 - float64| window loss of ``model`` (whose float32 score is ``base``) over
    the first NOISE_WINDOWS windows, scored again in float64 on the CPU."""
    count = min(NOISE_WINDOWS, windows.shape[0])
    exact = copy.deepcopy(model).to("cpu", torch.float64)
    float64 = score_text(exact, windows[:count]).window_nats  # fewer after a stop request
    return float(np.abs(base.window_nats[: float64.size] - float64).max())


def _mean(resamples: np.ndarray) -> np.ndarray:
    return resamples.mean(axis=-1)
