"""The whole ablation: every variant's output change, next-token loss change and latency change."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from toolkit.config import ModelConfig
from toolkit.errors import ConfigError
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.signals import stop_requested
from toolkit.studies.ablation.latency import LatencyChange, LatencyStudy, measure_latency_changes
from toolkit.studies.ablation.outputs import OutputChange, measure_output_changes
from toolkit.studies.ablation.variants import Variant, copy_model, variant_model
from toolkit.studies.settings import ForwardTiming
from toolkit.text.evaluation import EvalText
from toolkit.text.loss import LossChange, float32_loss_noise, judge_loss_changes, loss_change, score_text


@dataclass(frozen=True)
class AblationRow:
    """One variant: its name, the config fields it sets, and what it did to outputs and latency."""

    change: str
    config_changes: dict[str, Any]
    output: OutputChange
    latency: LatencyChange | None
    noise_floor_pct: float | None = None  # the latency run's A/A noise floor
    text_loss: LossChange | None = None  # next-token loss on real text, variant against base

    def to_dict(self) -> dict[str, Any]:
        output = self.output
        return {
            "change": self.change,
            "config_changes": self.config_changes,
            "rmse": output.rmse,
            "rmse_over_base_std": output.rmse_over_base_std,
            "mean_abs_diff": output.mean_abs_diff,
            "std_abs_diff": output.std_abs_diff,
            "pct_base_greater": output.pct_base_greater,
            "max_abs_diff": output.max_abs_diff,
            "kl": output.kl,
            "top1_agreement": output.top1_agreement,
            "base_logits_std": output.base_std,
            "n_logits": output.n_logits,
            "float32_noise_rmse": output.float32_noise_rmse,
            "below_float32_noise": output.below_float32_noise,
            "latency": asdict(self.latency) if self.latency is not None else None,
            "latency_noise_floor_pct": self.noise_floor_pct,
            "text_loss": self.text_loss.to_dict() if self.text_loss is not None else None,
        }


@dataclass(frozen=True)
class AblationResult:
    """Every variant's output and latency change against one base model with the same weights."""

    base_config: ModelConfig
    rows: list[AblationRow]
    n_examples: int
    n_positions: int
    output_dtype: str
    latency: LatencyStudy | None
    text: dict[str, Any] | None = None  # what was scored (EvalText.describe()), when text loss was measured

    def to_dict(self) -> list[dict[str, Any]]:
        """One dict per variant: the output change, the latency change and the run's noise floor."""
        return [row.to_dict() for row in self.rows]

    def to_frame(self) -> pd.DataFrame:
        return pd.json_normalize(self.to_dict(), sep="_")


def measure_text_losses(
    base_model: Transformer,
    variants: Sequence[Variant],
    windows: torch.Tensor,
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> list[LossChange]:
    """Each variant's next-token loss on ``windows`` against the base's, paired by window (float32 on
    ``device``), judged together (Holm; the base's float32 noise); after a SIGINT / SIGTERM, the
    variants scored completely so far."""
    base = copy_model(base_model, device, torch.float32)
    base_score = score_text(base, windows, progress=progress, label="text loss: baseline")
    changes: list[LossChange] = []
    for variant in variants:
        if stop_requested() is not None:  # also when the baseline's scoring was cut short
            break
        model = variant_model(base, variant)
        score = score_text(model, windows, progress=progress, label=f"text loss: {variant.name}")
        if not score.complete:
            break
        changes.append(loss_change(base_score, score))
    noise = float32_loss_noise(base, windows, base_score) if stop_requested() is None else math.nan
    return judge_loss_changes(changes, noise)


def run_ablation(
    base_model: Transformer,
    inputs: Sequence[torch.Tensor],
    variants: Sequence[Variant],
    timing: ForwardTiming | None = None,
    *,
    text: EvalText | None = None,
    text_device: torch.device | None = None,
    progress: ProgressCallback | None = None,
) -> AblationResult:
    """Output change of every variant on ``inputs`` (float64, CPU); with ``text``, its
    next-token loss change on them; with ``timing``, its latency change."""
    if not variants:
        raise ConfigError("no variants to compare; give at least one variant flag")
    if timing is not None:
        timing.seq_len_for(base_model.config)  # refuse an impossible timing input before any work
    _, changes = measure_output_changes(base_model, inputs, variants, progress=progress)
    variants = variants[: len(changes)]  # fewer only when a signal stopped the run
    text_losses: list[LossChange | None] = [None] * len(variants)
    if text is not None and stop_requested() is None:
        device = text_device if text_device is not None else torch.device("cpu")
        measured_text = measure_text_losses(base_model, variants, text.windows, device, progress=progress)
        text_losses[: len(measured_text)] = measured_text
    latencies: list[LatencyChange | None] = [None] * len(variants)
    study = None
    if timing is not None and stop_requested() is None:  # after SIGINT / SIGTERM: the output part only
        measured, study = measure_latency_changes(base_model, variants, timing, progress=progress)
        latencies = list(measured)
    rows = [
        AblationRow(
            change=variant.name,
            config_changes=dict(variant.changes),
            output=change,
            latency=latency,
            noise_floor_pct=study.noise_floor_pct if study is not None else None,
            text_loss=text_loss,
        )
        for variant, change, latency, text_loss in zip(variants, changes, latencies, text_losses, strict=True)
    ]
    return AblationResult(
        base_config=base_model.config,
        rows=rows,
        n_examples=len(inputs),
        n_positions=changes[0].n_positions,
        output_dtype=str(torch.float64).removeprefix("torch."),
        latency=study,
        text=text.describe() if text is not None else None,
    )
