"""Training: the same small GPT trained with each normalisation (same seed, same batches) on bytes of
real text: speed, final validation loss, convergence, stability, and what the normalisation does to
the hidden units.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.device import device_name, synchronize
from toolkit.errors import DataError, setting
from toolkit.memory import peak_memory
from toolkit.model import Block, Transformer
from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import stop_requested
from toolkit.studies.layernorm.corpus import Corpus, stdlib_corpus
from toolkit.studies.settings import TrainingSettings

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
    runs: list[NormRun]
    steps_done: int | None = None  # fewer than settings.steps when a signal stopped the training

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
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([run.summary() for run in self.runs])


class _Batches:
    """The same training windows (seeded) and validation windows (evenly spaced) for every run."""

    def __init__(self, corpus: Corpus, settings: TrainingSettings) -> None:
        span = settings.seq_len + 1
        for part, data in (("training", corpus.train), ("validation", corpus.validation)):
            if data.numel() < span + 1:
                raise DataError(
                    f"the {part} part of {corpus.source} has {data.numel()} bytes, fewer than one "
                    f"window of seq_len + 1 = {span}; use a larger file or a shorter {setting('seq_len')}"
                )
        generator = torch.Generator().manual_seed(settings.seed)
        self.starts = torch.randint(
            0, corpus.train.numel() - span + 1, (settings.steps, settings.batch), generator=generator
        )
        n_val = settings.eval_batches * settings.batch
        val_starts = torch.linspace(0, corpus.validation.numel() - span, n_val).long()
        self.corpus, self.span, self.settings = corpus, span, settings
        self.validation = [
            self._windows(corpus.validation, chunk)
            for chunk in val_starts.view(settings.eval_batches, settings.batch).unbind(0)
        ]

    def _windows(self, data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = starts[:, None] + torch.arange(self.span)  # (B, S + 1)
        windows = data[offsets].long()
        return windows[:, :-1], windows[:, 1:]  # inputs, next-byte targets

    def train(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(self.corpus.train, self.starts[step])


def _loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)  # (B, S, 256)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def _validation_loss(model: nn.Module, batches: _Batches, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    losses = [float(_loss(model, x.to(device), y.to(device))) for x, y in batches.validation]
    model.train(was_training)
    return float(np.mean(losses))


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


def _training_step_peak(
    model: Transformer, batches: _Batches, settings: TrainingSettings, device: torch.device
) -> int:
    """Peak bytes of one training step (forward, backward, AdamW step) on a copy of the model.

    A first, untracked step on the copy also warms up (kernel compilation, thread pools), so that
    the timed run of every normalisation starts warm.
    """
    twin = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(twin.parameters(), lr=settings.lr)
    x, y = batches.train(0)
    x, y = x.to(device), y.to(device)
    _loss(twin, x, y).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    twin = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(twin.parameters(), lr=settings.lr)
    with peak_memory(device) as peak:
        loss = _loss(twin, x, y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        del loss
    return peak()


class _NormTrainer:
    """One normalisation's model, optimizer and records; advanced one step at a time."""

    def __init__(
        self, norm: str, batches: _Batches, settings: TrainingSettings, device: torch.device
    ) -> None:
        torch.manual_seed(settings.seed)  # every normalisation starts from the same weights
        self.model = Transformer(settings.model_config(norm)).to(device)
        self.model.train()
        self.peak = _training_step_peak(self.model, batches, settings, device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0
        )
        self.norm, self.batches, self.settings, self.device = norm, batches, settings, device
        self.grad_every = max(1, settings.steps // 50)
        self.train_losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        self.grad_steps: list[int] = []
        self.grad_norms: dict[str, list[float]] = {f"block {i}": [] for i in range(settings.model.n_layers)}
        self.wall_s = 0.0

    def evaluate(self, step: int) -> None:
        self.val_steps.append(step)
        self.val_losses.append(_validation_loss(self.model, self.batches, self.device))

    def step(self, step: int) -> float:
        """One optimizer step on batch ``step`` (evaluating first when due); returns the loss."""
        if step % self.settings.eval_every == 0:
            self.evaluate(step)
        x, y = self.batches.train(step)
        x, y = x.to(self.device), y.to(self.device)
        synchronize(self.device)
        start = time.perf_counter()
        loss = _loss(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if step % self.grad_every == 0:
            self.grad_steps.append(step)
            for i, value in enumerate(_block_grad_norms(self.model)):
                self.grad_norms[f"block {i}"].append(value)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.train_losses.append(loss.item())  # synchronises
        self.wall_s += time.perf_counter() - start
        return self.train_losses[-1]

    def finish(self, steps: int) -> NormRun:
        """Final validation loss and activation statistics after ``steps`` steps, and the summary."""
        self.evaluate(steps)
        first_batch = self.batches.validation[0][0].to(self.device)
        mean, var, before, after = _activation_statistics(self.model, first_batch)
        final = self.val_losses[-1]
        return NormRun(
            norm=self.norm,
            wall_s=self.wall_s,
            steps_per_s=steps / self.wall_s,
            final_val_loss=final,
            perplexity=math.exp(final) if math.isfinite(final) else math.nan,
            steps_to_90pct=steps_to_fraction(self.train_losses),
            peak_memory_bytes=self.peak,
            activation_mean=mean,
            activation_var=var,
            loss_std=detrended_std(self.train_losses),
            train_losses=self.train_losses,
            val_steps=self.val_steps,
            val_losses=self.val_losses,
            grad_steps=self.grad_steps,
            grad_norms=self.grad_norms,
            correlation_before=before,
            correlation_after=after,
            mean_abs_correlation_before=_mean_abs_offdiagonal(before),
            mean_abs_correlation_after=_mean_abs_offdiagonal(after),
        )


def train_norms(
    device: torch.device,
    settings: TrainingSettings | None = None,
    corpus: Corpus | None = None,
    progress: ProgressCallback = no_progress,
) -> TrainingResult:
    """Train the same small GPT with each normalisation in ``settings.norms`` (same seed and batches).

    The runs advance in lockstep, one step each per round in a rotating order, so that a change in
    the machine's load while training slows every normalisation alike (as ``timing.compare`` does);
    no run uses randomness after initialisation, so lockstep does not change any run's numbers.
    """
    settings = settings or TrainingSettings()
    corpus = corpus if corpus is not None else stdlib_corpus()
    batches = _Batches(corpus, settings)
    trainers = []
    for norm in settings.norms:
        if stop_requested() is None:
            trainers.append(_NormTrainer(norm, batches, settings, device))
    total = settings.steps * len(trainers)
    done = steps_done = 0
    for step in range(settings.steps):
        if stop_requested() is not None:  # SIGINT / SIGTERM: keep the steps trained so far
            break
        steps_done = step + 1
        shift = step % len(trainers)
        for trainer in trainers[shift:] + trainers[:shift]:
            loss = trainer.step(step)
            done += 1
            progress(done, total, f"training step {step + 1}: {NORM_LABELS[trainer.norm]} loss {loss:.3f}")
    # A signal before the first step (while the runs were being set up) leaves nothing to report.
    runs = [trainer.finish(steps_done) for trainer in trainers] if steps_done else []
    method = (
        "torch.cuda.max_memory_allocated over one training step"
        if device.type == "cuda"
        else "live tensor bytes over one training step (forward, backward, AdamW step)"
    )
    stopped = steps_done if steps_done < settings.steps else None
    return TrainingResult(settings, corpus.describe(), device_name(device), method, runs, stopped)
