"""Training: the same small GPT trained with each normalisation (same seed, same batches) on bytes of
real text: speed, final validation loss, convergence, stability, and what the normalisation does to
the hidden units.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from toolkit.device import device_name
from toolkit.errors import DataError, setting
from toolkit.memory import peak_memory
from toolkit.model import Block, Transformer
from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import stop_requested
from toolkit.studies.ablation.training import Arm, arm_summary, compare_arms
from toolkit.studies.layernorm.corpus import Corpus, stdlib_corpus
from toolkit.studies.settings import TrainingSettings
from toolkit.training.loop import Batches, Trainer, TrainRun, build_model, heldout_windows, next_token_loss
from toolkit.training.recipe import Recipe

NORM_LABELS = {
    "torch": "torch LayerNorm",
    "custom": "custom LayerNorm",
    "rms": "RMSNorm",
    "none": "no normalisation",
    "batch": "BatchNorm (features)",
}


@dataclass
class NormRun:
    """One normalisation's training run and what was measured on it."""

    norm: str
    wall_s: float  # training steps only (evaluation excluded)
    steps_per_s: float
    final_val_loss: float  # nats per byte, validation set, eval mode
    perplexity: float  # exp(final_val_loss), per byte
    steps_to_90pct: float  # first step where the smoothed loss has made 90% of its final improvement
    peak_memory_bytes: int
    activation_mean: float  # of the normalisation layers' outputs on a validation batch
    activation_var: float
    loss_std: float  # detrended std of the training loss over the last steps
    train_losses: list[float]
    val_steps: list[int]
    val_losses: list[float]
    grad_steps: list[int]
    grad_norms: dict[str, list[float]]  # "block 0", ... -> gradient norm of that block's parameters
    correlation_before: np.ndarray  # (d, d) hidden-unit correlation at the input of the last block's ln1
    correlation_after: np.ndarray  # ... and at its output
    mean_abs_correlation_before: float
    mean_abs_correlation_after: float

    def summary(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "wall_s": self.wall_s,
            "steps_per_s": self.steps_per_s,
            "final_val_loss": self.final_val_loss,
            "perplexity": self.perplexity,
            "steps_to_90pct": self.steps_to_90pct,
            "peak_memory_bytes": self.peak_memory_bytes,
            "activation_mean": self.activation_mean,
            "activation_var": self.activation_var,
            "loss_std": self.loss_std,
            "mean_abs_correlation_before": self.mean_abs_correlation_before,
            "mean_abs_correlation_after": self.mean_abs_correlation_after,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "train_losses": self.train_losses,
            "val_steps": self.val_steps,
            "val_losses": self.val_losses,
            "grad_steps": self.grad_steps,
            "grad_norms": self.grad_norms,
        }


@dataclass
class TrainingResult:
    settings: TrainingSettings
    corpus: dict[str, Any]
    device: str
    peak_method: str
    runs: list[NormRun]  # the first seed's runs, with every record
    steps_done: int | None = None  # fewer than settings.steps when a signal stopped the training
    seed_runs: dict[str, list[TrainRun]] = field(default_factory=dict)  # norm -> one run per seed

    @property
    def baseline(self) -> str:
        """The norm the others are judged against: torch's LayerNorm when it was trained."""
        return "torch" if "torch" in self.seed_runs else next(iter(self.seed_runs), "torch")

    def seed_summary(self) -> list[dict[str, Any]]:
        """Per norm: its figures over the seeds (:func:`arm_summary`) and, but for the baseline, its final
        validation loss against the baseline's, paired by seed (t-interval, Holm over the norms)."""
        if not self.seed_runs:
            return []
        config = self.settings.model
        arms = {norm: Arm(norm, config.replace(norm=norm), {}, runs) for norm, runs in self.seed_runs.items()}
        base = arms[self.baseline]
        changes = {
            change.name: change for change in compare_arms(base, [a for a in arms.values() if a is not base])
        }
        return [
            {
                "norm": norm,
                **arm_summary(arm, base.final_mean),
                **(changes[norm].to_dict() if norm in changes else {}),
            }
            for norm, arm in arms.items()
        ]

    def run(self, norm: str) -> NormRun | None:
        return next((r for r in self.runs if r.norm == norm), None)

    def pct_vs_torch(self, norm: str, metric: str) -> float:
        """(norm − torch LayerNorm) / torch LayerNorm × 100 for one summary metric (NaN without torch)."""
        base, run = self.run("torch"), self.run(norm)
        if base is None or run is None:
            return math.nan
        reference, value = float(getattr(base, metric)), float(getattr(run, metric))
        if reference == 0 or not (math.isfinite(reference) and math.isfinite(value)):
            return math.nan
        return 100.0 * (value - reference) / abs(reference)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "corpus": self.corpus,
            "device": self.device,
            "peak_method": self.peak_method,
            "steps_done": self.steps_done if self.steps_done is not None else self.settings.steps,
            "definitions": {
                "steps_to_90pct": "first step at which the trailing moving average of the training loss "
                "(window steps/20) is below first_loss - 0.9 * (first_loss - mean of the last window)",
                "loss_std": "std of the training loss over the last max(10, steps/5) steps after "
                "removing a fitted straight line",
                "activation_mean/var": "mean and variance of all elements of each normalisation layer's "
                "output on one validation batch, averaged over layers",
                "correlation": "Pearson correlation between hidden units over the tokens of one "
                "validation batch, at the input and output of the last block's first norm",
            },
            "runs": [run.to_dict() for run in self.runs],
            "baseline": self.baseline,
            "over_seeds": self.seed_summary(),
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([run.summary() for run in self.runs])


def _norm_modules(model: Transformer) -> list[nn.Module]:
    """Every normalisation layer: ln1 and ln2 of each block, and ln_final."""
    names = ("ln1", "ln2", "ln_final")
    return [module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in names]


def _block_grad_norms(model: Transformer) -> list[float]:
    norms = []
    for block in model.blocks:
        grads = [p.grad.detach().float().norm() for p in block.parameters() if p.grad is not None]
        norms.append(float(torch.stack(grads).norm()) if grads else math.nan)
    return norms


def _hidden_correlation(values: torch.Tensor) -> np.ndarray:
    """Correlation between hidden units (columns) over tokens (rows); constant units give 0."""
    flat = values.reshape(-1, values.shape[-1]).double().T  # (d, tokens)
    corr = torch.nan_to_num(torch.corrcoef(flat), nan=0.0)
    return corr.cpu().numpy()


def _mean_abs_offdiagonal(corr: np.ndarray) -> float:
    d = corr.shape[0]
    if d < 2:
        return math.nan
    return float((np.abs(corr).sum() - np.abs(np.diag(corr)).sum()) / (d * d - d))


@torch.no_grad()
def _activation_statistics(
    model: Transformer, inputs: torch.Tensor
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean and variance of the norm layers' outputs; hidden correlation around the last ln1."""
    model.eval()
    outputs: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}

    def keep_output(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        outputs.append(output.float())

    def keep_both(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured.update(before=inputs[0], after=output)

    handles = [m.register_forward_hook(keep_output) for m in _norm_modules(model)]
    last_block = cast(Block, model.blocks[-1])
    handles.append(last_block.ln1.register_forward_hook(keep_both))
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    model.train()
    mean = float(np.mean([float(o.mean()) for o in outputs]))
    var = float(np.mean([float(o.var(unbiased=False)) for o in outputs]))
    return mean, var, _hidden_correlation(captured["before"]), _hidden_correlation(captured["after"])


def steps_to_fraction(losses: Sequence[float], fraction: float = 0.9) -> float:
    """First step (1-based) where the trailing moving average has made ``fraction`` of the final improvement.

    Window w = max(1, len/20); first = losses[0]; final = mean of the last w losses. NaN when the
    loss did not improve or is not finite.
    """
    values = np.asarray(losses, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return math.nan
    window = max(1, values.size // 20)
    first, final = values[0], values[-window:].mean()
    if not final < first:
        return math.nan
    threshold = first - fraction * (first - final)
    smoothed = np.convolve(values, np.ones(window) / window, mode="full")[: values.size]
    smoothed[: window - 1] = [values[: i + 1].mean() for i in range(window - 1)]
    below = np.flatnonzero(smoothed <= threshold)
    return float(below[0] + 1) if below.size else math.nan


def detrended_std(losses: Sequence[float]) -> float:
    """Std of the last max(10, len/5) losses around their least-squares line."""
    values = np.asarray(losses, dtype=np.float64)
    tail = values[-max(10, values.size // 5) :]
    if tail.size < 3 or not np.isfinite(tail).all():
        return math.nan
    steps = np.arange(tail.size, dtype=np.float64)
    slope, intercept = np.polyfit(steps, tail, 1)
    return float(np.std(tail - (slope * steps + intercept), ddof=2))


def _training_step_peak(model: Transformer, batches: Batches, recipe: Recipe, device: torch.device) -> int:
    """Peak bytes of one training step (forward, backward, AdamW step) on a copy of the model.

    A first, untracked step on the copy also warms up (kernel compilation, thread pools), so that
    the timed run of every normalisation starts warm.
    """
    twin = copy.deepcopy(model)
    optimizer = recipe.optimizer(twin)
    x, y = batches(0)
    x, y = x.to(device), y.to(device)
    next_token_loss(twin, x, y).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    twin = copy.deepcopy(model)
    optimizer = recipe.optimizer(twin)
    with peak_memory(device) as peak:
        loss = next_token_loss(twin, x, y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        del loss
    return peak()


class _NormTrainer:
    """One normalisation's run with the toolkit's trainer, recording block gradient norms as it goes."""

    def __init__(
        self,
        norm: str,
        batches: Batches,
        validation: torch.Tensor,
        settings: TrainingSettings,
        device: torch.device,
    ) -> None:
        recipe = settings.recipe
        model = build_model(settings.model_config(norm), batches.seed, device)  # the same weights per seed
        self.peak = _training_step_peak(model, batches, recipe, device)
        self.trainer = Trainer(
            model, batches, recipe, validation, name=norm, device=device, after_backward=self._record_grads
        )
        self.model, self.norm, self.validation, self.device = model, norm, validation, device
        self.grad_every = max(1, settings.steps // 50)
        self.grad_steps: list[int] = []
        self.grad_norms: dict[str, list[float]] = {f"block {i}": [] for i in range(settings.model.n_layers)}

    def _record_grads(self, step: int, model: Transformer) -> None:
        if step % self.grad_every == 0:
            self.grad_steps.append(step)
            for i, value in enumerate(_block_grad_norms(model)):
                self.grad_norms[f"block {i}"].append(value)

    def step(self, step: int) -> float:
        """One optimizer step on batch ``step`` (evaluating first when due); returns the loss."""
        return self.trainer.step(step)

    def finish(self, steps: int) -> NormRun:
        """Final validation loss and activation statistics after ``steps`` steps, and the summary."""
        run = self.trainer.finish()
        first_batch = self.validation[: self.trainer.recipe.batch, :-1].to(self.device)
        mean, var, before, after = _activation_statistics(self.model, first_batch)
        final = run.eval_losses[-1]
        return NormRun(
            norm=self.norm,
            wall_s=run.train_s,
            steps_per_s=steps / run.train_s,
            final_val_loss=final,
            perplexity=math.exp(final) if math.isfinite(final) else math.nan,
            steps_to_90pct=steps_to_fraction(run.train_losses),
            peak_memory_bytes=self.peak,
            activation_mean=mean,
            activation_var=var,
            loss_std=detrended_std(run.train_losses),
            train_losses=run.train_losses,
            val_steps=run.eval_steps,
            val_losses=run.eval_losses,
            grad_steps=self.grad_steps,
            grad_norms=self.grad_norms,
            correlation_before=before,
            correlation_after=after,
            mean_abs_correlation_before=_mean_abs_offdiagonal(before),
            mean_abs_correlation_after=_mean_abs_offdiagonal(after),
        )


def _check_corpus(corpus: Corpus, settings: TrainingSettings) -> None:
    span = settings.seq_len + 1
    for part, data in (("training", corpus.train), ("validation", corpus.validation)):
        if data.numel() < span + 1:
            raise DataError(
                f"the {part} part of {corpus.source} has {data.numel()} bytes, fewer than one "
                f"window of seq_len + 1 = {span}; use a larger file or a shorter {setting('seq_len')}"
            )


def train_norms(
    device: torch.device,
    settings: TrainingSettings | None = None,
    corpus: Corpus | None = None,
    progress: ProgressCallback = no_progress,
) -> TrainingResult:
    """Train the same small GPT with each normalisation in ``settings.norms``, once per seed (the same
    initialisation and batches for every norm within a seed), with the toolkit's one trainer.

    Within a seed the runs advance in lockstep, one step each per round in a rotating order, so that
    a change in the machine's load while training slows every normalisation alike (as
    ``timing.compare`` does); no run uses randomness after initialisation, so lockstep does not
    change any run's numbers. The first seed's runs keep their full records (curves, gradient
    norms, activation statistics); every seed's final validation loss goes into the comparison of
    each norm with torch's LayerNorm over seeds.
    """
    settings = settings or TrainingSettings()
    corpus = corpus if corpus is not None else stdlib_corpus()
    _check_corpus(corpus, settings)
    recipe = settings.recipe
    validation = heldout_windows(corpus.validation, settings.seq_len, settings.eval_batches * settings.batch)
    seeds = settings.seed_list
    by_norm: dict[str, list[TrainRun]] = {norm: [] for norm in settings.norms}
    runs: list[NormRun] = []
    first_steps = 0
    total = settings.steps * len(settings.norms) * len(seeds)
    done = 0
    for index, seed in enumerate(seeds):
        if stop_requested() is not None:
            break
        batches = Batches(corpus.train, recipe, seed)
        trainers = []
        for norm in settings.norms:
            if stop_requested() is None:
                trainers.append(_NormTrainer(norm, batches, validation, settings, device))
        steps_done = 0
        for step in range(settings.steps):
            if stop_requested() is not None:  # SIGINT / SIGTERM: keep the steps trained so far
                break
            steps_done = step + 1
            shift = step % len(trainers)
            for trainer in trainers[shift:] + trainers[:shift]:
                loss = trainer.step(step)
                done += 1
                label = NORM_LABELS[trainer.norm]
                progress(done, total, f"seed {seed}, step {step + 1}: {label} loss {loss:.3f}")
        if index == 0:
            first_steps = steps_done
            # A signal before the first step (while the runs were being set up) leaves nothing to report.
            runs = [trainer.finish(steps_done) for trainer in trainers] if steps_done else []
        elif steps_done == settings.steps:
            for trainer in trainers:
                trainer.trainer.finish()
        for trainer in trainers:
            by_norm[trainer.norm].append(trainer.trainer.run)
    method = (
        "torch.cuda.max_memory_allocated over one training step"
        if device.type == "cuda"
        else "live tensor bytes over one training step (forward, backward, AdamW step)"
    )
    stopped = first_steps if first_steps < settings.steps else None
    return TrainingResult(
        settings,
        corpus.describe(),
        device_name(device),
        method,
        runs,
        stopped,
        seed_runs=by_norm,
    )
