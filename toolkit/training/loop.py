"""One training run: the seeded batches, the step loop, the held-out evaluations and what they measured.

The seed is the unit of replication. :func:`train_run` seeds two separate streams from it: the
initialisation (``torch.manual_seed`` just before the model is built) and the batches (their own
generator), so that two architectures trained with one seed see the same windows in the same order
even when their parameters differ in number. A run whose loss becomes NaN or infinite stops there and
is reported as diverged; it does not raise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.config import ModelConfig
from toolkit.device import synchronize
from toolkit.errors import DataError, setting
from toolkit.model import Transformer
from toolkit.signals import stop_requested
from toolkit.training.recipe import Recipe

EVAL_BATCH = 32


class Batches:
    """Random training windows of a token stream, drawn from a generator seeded with the run's seed.

    Step ``s`` always gets the same windows for the same seed, whatever was drawn before it, so a run
    can be compared window for window with another architecture's.
    """

    def __init__(self, ids: torch.Tensor, recipe: Recipe, seed: int) -> None:
        longest = max(recipe.seq_len, recipe.long_len if recipe.long_every else 0)
        if ids.numel() < longest + 2:
            raise DataError(
                f"the training text has {ids.numel()} tokens, fewer than one training window of "
                f"{longest + 1}; give a longer {setting('text')} or a smaller {setting('seq_len')}"
            )
        self.ids, self.recipe, self.seed = ids, recipe, seed

    def shape(self, step: int) -> tuple[int, int]:
        """(windows, tokens per window) of step ``step``."""
        recipe = self.recipe
        if (
            recipe.long_every
            and step >= recipe.long_from
            and (step - recipe.long_from) % recipe.long_every == recipe.long_every - 1
        ):
            return max(1, recipe.tokens_per_step // recipe.long_len), recipe.long_len
        return recipe.batch, recipe.seq_len

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets of step ``step``, each [windows, length] int64."""
        count, length = self.shape(step)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(0, self.ids.numel() - length, (count,), generator=generator)
        rows = self.ids[starts[:, None] + torch.arange(length + 1)].long()  # (count, length + 1)
        return rows[:, :-1], rows[:, 1:]


def heldout_windows(ids: torch.Tensor, seq_len: int, count: int) -> torch.Tensor:
    """``count`` non-overlapping held-out windows of ``seq_len + 1`` tokens, evenly spaced over the text
    (all of them when it holds fewer)."""
    span = seq_len + 1
    available = (ids.numel() - 1) // seq_len
    if available < 1:
        raise DataError(
            f"the held-out text has {ids.numel()} tokens, fewer than one window of {span}; "
            f"use a longer held-out text or a smaller {setting('seq_len')}"
        )
    chosen = np.unique(np.linspace(0, available - 1, min(count, available)).round().astype(np.int64))
    starts = torch.from_numpy(chosen) * seq_len
    return ids[starts[:, None] + torch.arange(span)].long()


def next_token_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)  # (B, S, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, windows: torch.Tensor, device: torch.device) -> float:
    """Mean next-token loss (nats/token) over ``windows``, in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], EVAL_BATCH):
        rows = windows[start : start + EVAL_BATCH].to(device)
        loss = next_token_loss(model, rows[:, :-1], rows[:, 1:])
        total += float(loss) * rows[:, 1:].numel()
        count += rows[:, 1:].numel()
    model.train(was_training)
    return total / count


@dataclass
class TrainRun:
    """What one (architecture, seed) training run measured.

    ``final_loss``: held-out loss after the last step (NaN when the run diverged or was stopped);
    ``tokens_per_s``: training tokens over the seconds spent in training steps (evaluation excluded).
    """

    name: str
    seed: int
    steps: int  # steps asked for
    steps_done: int = 0
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    tokens: int = 0
    train_s: float = 0.0
    diverged: bool = False
    interrupted: bool = False
    parameters: int = 0

    @property
    def complete(self) -> bool:
        return self.steps_done == self.steps and not self.diverged

    @property
    def final_loss(self) -> float:
        if not self.complete or not self.eval_steps or self.eval_steps[-1] != self.steps:
            return math.nan
        return self.eval_losses[-1]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "steps": self.steps,
            "steps_done": self.steps_done,
            "final_loss": self.final_loss,
            "tokens_per_s": self.tokens_per_s,
            "diverged": self.diverged,
            "interrupted": self.interrupted,
            "parameters": self.parameters,
            "eval_steps": self.eval_steps,
            "eval_losses": self.eval_losses,
            "train_losses": self.train_losses,
            "tokens": self.tokens,
            "train_s": self.train_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRun:
        """The run :meth:`to_dict` wrote (its derived figures are recomputed, not read)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


StepCallback = Callable[[int], None]
"""``callback(steps_done)`` after each training step (the CLI's progress bar)."""


def build_model(config: ModelConfig, seed: int, device: torch.device) -> Transformer:
    """The model ``config`` describes, initialised from ``seed`` (the same stream for every variant)."""
    torch.manual_seed(seed)
    return Transformer(config).to(device).train()


@torch.no_grad()
def extend_positions_(model: Transformer, trained: int) -> None:
    """Fill a learned position table past its first ``trained`` rows with copies of them, in order
    (Longformer's initialisation for a longer context: what attention learned about nearby positions
    holds in every copy). A model with rotary positions has no table and is left as it is."""
    table = getattr(model, "position_embedding", None)
    if table is None:
        return
    rows = table.weight
    for start in range(trained, rows.shape[0], trained):
        stop = min(start + trained, rows.shape[0])
        rows[start:stop] = rows[: stop - start]


class Trainer:
    """One model's optimizer, schedule and records, advanced one step at a time (:func:`train_run` runs
    it to the end; the LayerNorm study advances several in lockstep).

    A recipe whose long windows start late (``long_from`` > 0) extends the context there: the position
    table past ``seq_len`` is filled by :func:`extend_positions_` before the first long step.

    ``after_backward(step, model)`` sees the gradients of each step before clipping.
    """

    def __init__(
        self,
        model: Transformer,
        batches: Batches,
        recipe: Recipe,
        heldout: torch.Tensor,
        *,
        name: str = "",
        device: torch.device | None = None,
        after_backward: Callable[[int, Transformer], None] | None = None,
    ) -> None:
        self.model, self.batches, self.recipe, self.heldout = model, batches, recipe, heldout
        self.device = device if device is not None else next(model.parameters()).device
        self.after_backward = after_backward
        self.optimizer = recipe.optimizer(model)
        parameters = sum(p.numel() for p in model.parameters())
        self.run = TrainRun(name=name, seed=batches.seed, steps=recipe.steps, parameters=parameters)
        model.train()

    def evaluate(self, step: int) -> float:
        loss = heldout_loss(self.model, self.heldout, self.device)
        self.run.eval_steps.append(step)
        self.run.eval_losses.append(loss)
        return loss

    def step(self, step: int) -> float:
        """One optimizer step on batch ``step`` (evaluating first when due); the training loss.

        A loss that is not finite marks the run diverged (the caller stops it)."""
        run, recipe = self.run, self.recipe
        if step % recipe.eval_every == 0:
            self.evaluate(step)
        if recipe.long_every and recipe.long_from and step == recipe.long_from:
            extend_positions_(self.model, recipe.seq_len)
        inputs, targets = self.batches(step)
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = recipe.learning_rate(step)
        synchronize(self.device)
        started = time.perf_counter()
        loss = next_token_loss(self.model, inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.after_backward is not None:
            self.after_backward(step, self.model)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.clip)
        self.optimizer.step()
        value = loss.item()  # synchronises
        run.train_s += time.perf_counter() - started
        run.train_losses.append(value)
        run.tokens += targets.numel()
        run.steps_done = step + 1
        run.diverged = not math.isfinite(value)
        return value

    def finish(self) -> TrainRun:
        """The held-out loss after the last step done (a diverged run is left as it is)."""
        if not self.run.diverged and (
            not self.run.eval_steps or self.run.eval_steps[-1] != self.run.steps_done
        ):
            self.run.diverged = not math.isfinite(self.evaluate(self.run.steps_done))
        return self.run


def train_run(
    model: Transformer,
    batches: Batches,
    recipe: Recipe,
    heldout: torch.Tensor,
    *,
    name: str = "",
    device: torch.device | None = None,
    on_step: StepCallback | None = None,
) -> TrainRun:
    """Train ``model`` in place for ``recipe.steps`` steps on ``batches``; evaluate on the ``heldout``
    windows every ``recipe.eval_every`` steps and after the last.

    Stops early, marked, after a SIGINT / SIGTERM under :func:`toolkit.signals.graceful` (no final
    evaluation), or when the training loss is not finite (diverged).
    """
    trainer = Trainer(model, batches, recipe, heldout, name=name, device=device)
    for step in range(recipe.steps):
        if stop_requested() is not None:
            trainer.run.interrupted = True
            return trainer.run
        trainer.step(step)
        if on_step is not None:
            on_step(trainer.run.steps_done)
        if trainer.run.diverged:
            return trainer.run
    return trainer.finish()
