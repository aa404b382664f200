"""What a change does to training: the base and every variant trained from scratch over seeds, judged
with the seed as the unit of replication.

Every (architecture, seed) run uses the one trainer (:mod:`toolkit.training`) with the same recipe, the
same initialisation stream and the same batches in the same order. Runs go seed by seed, the base
and then each variant, so that a machine that slows down during the study slows every arm alike.

Per variant: the paired difference of final held-out loss (variant − base, seed by seed), its 95%
t-interval, the t-test's p-value with Holm's adjustment over the variants, and the smallest difference
these seeds would detect 80% of the time; steps the variant needs to reach the base's final loss
(faster per step) and its training tokens per second against the base's (faster per second). A
variant that diverged in any seed is reported as diverged.

Under ``torchrun`` the (architecture, seed) runs are spread over the ranks (gloo on the CPU, NCCL on
GPUs) and gathered on rank 0: each run is the same computation wherever it runs.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special  # noqa: F401  (paired_t's t distribution: loaded before training, not after a signal)
import torch

from toolkit.config import ModelConfig
from toolkit.errors import ConfigError
from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import stop_requested
from toolkit.studies.ablation.variants import Variant
from toolkit.timing.decision import ALPHA, holm, paired_t
from toolkit.training.loop import Batches, TrainRun, build_model, heldout_windows, train_run
from toolkit.training.recipe import Recipe

BASE = "base"
EVAL_WINDOWS = 128  # held-out windows each evaluation scores


@dataclass(frozen=True)
class Arm:
    """One architecture of the comparison (the base or a variant) and its runs, one per seed."""

    name: str
    config: ModelConfig
    changes: dict[str, Any]
    runs: list[TrainRun]

    @property
    def parameters(self) -> int:
        return self.runs[0].parameters if self.runs else 0

    @property
    def diverged_seeds(self) -> list[int]:
        return [run.seed for run in self.runs if run.diverged]

    def finals(self) -> dict[int, float]:
        """Final held-out loss by seed, of the runs that finished."""
        return {run.seed: run.final_loss for run in self.runs if math.isfinite(run.final_loss)}

    @property
    def final_mean(self) -> float:
        """Mean final held-out loss over the seeds that finished (NaN if none did)."""
        finals = self.finals()
        return float(np.mean(list(finals.values()))) if finals else math.nan

    def curves(self) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation steps [E] and the held-out losses [complete runs, E] of the runs that completed."""
        complete = [run for run in self.runs if run.complete]
        if not complete:
            return np.empty(0), np.empty((0, 0))
        steps = np.asarray(complete[0].eval_steps, dtype=np.float64)
        return steps, np.asarray([run.eval_losses for run in complete], dtype=np.float64)

    def mean_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation steps, and the mean over seeds of the held-out loss at each (complete runs)."""
        steps, losses = self.curves()
        return steps, losses.mean(axis=0) if losses.size else np.empty(0)

    def tokens_per_s(self) -> dict[int, float]:
        return {run.seed: run.tokens_per_s for run in self.runs if run.steps_done}


def steps_to_reach(steps: np.ndarray, losses: np.ndarray, target: float) -> float:
    """The first step where the curve reaches ``target`` (linear between evaluations); NaN if never."""
    if not math.isfinite(target) or losses.size == 0:
        return math.nan
    below = np.flatnonzero(losses <= target)
    if below.size == 0:
        return math.nan
    i = int(below[0])
    if i == 0:
        return float(steps[0])
    x0, x1, y0, y1 = steps[i - 1], steps[i], losses[i - 1], losses[i]
    return float(x0 + (x1 - x0) * (y0 - target) / (y0 - y1))


@dataclass(frozen=True)
class TrainingChange:
    """A variant against the base over the seeds both finished (paired by seed)."""

    name: str
    delta_nats: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    significant: bool
    detectable_nats: float
    steps_to_base_loss: float
    tokens_per_s_delta_pct: float
    tokens_per_s_ci_pct: tuple[float, float]
    paired_seeds: int

    def to_dict(self) -> dict[str, Any]:
        """The judgement's JSON keys (beside the variant's own summary, :func:`arm_summary`)."""
        return {
            "delta_nats": self.delta_nats,
            "ci95": [self.ci_low, self.ci_high],
            "significant": self.significant,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "detectable_nats": self.detectable_nats,
            "tokens_per_s_delta_pct": self.tokens_per_s_delta_pct,
            "tokens_per_s_ci95_pct": list(self.tokens_per_s_ci_pct),
            "paired_seeds": self.paired_seeds,
        }


def arm_summary(arm: Arm, base_final: float) -> dict[str, Any]:
    """One arm's figures over its seeds: final loss (mean, std, per seed), steps to ``base_final``,
    tokens/s, divergence, parameters."""
    finals = arm.finals()
    steps, mean = arm.mean_curve()
    speeds = arm.tokens_per_s()
    return {
        "final_loss_mean": arm.final_mean,
        "final_loss_std": float(np.std(list(finals.values()), ddof=1)) if len(finals) > 1 else math.nan,
        "seeds": {str(seed): loss for seed, loss in sorted(finals.items())},
        "steps_to_base_loss": steps_to_reach(steps, mean, base_final),
        "tokens_per_s": float(np.mean(list(speeds.values()))) if speeds else math.nan,
        "tokens_per_s_by_seed": {str(seed): value for seed, value in sorted(speeds.items())},
        "diverged": bool(arm.diverged_seeds),
        "diverged_seeds": arm.diverged_seeds,
        "parameters": arm.parameters,
    }


@dataclass(frozen=True)
class TrainingResult:
    """The base and every variant trained over the same seeds, and each variant judged against the base."""

    base: Arm
    variants: list[Arm]
    changes: list[TrainingChange]
    recipe: Recipe
    seeds: list[int]
    device: str
    text: dict[str, Any]
    ranks: int = 1
    interrupted: bool = False

    @property
    def base_final(self) -> float:
        return self.base.final_mean

    def base_dict(self) -> dict[str, Any]:
        return arm_summary(self.base, self.base_final)

    def row_dict(self, index: int) -> dict[str, Any]:
        return {**arm_summary(self.variants[index], self.base_final), **self.changes[index].to_dict()}

    def curves(self) -> dict[str, Any]:
        return {
            arm.name: {"runs": [run.to_dict() for run in arm.runs]} for arm in (self.base, *self.variants)
        }


def compare_arms(base: Arm, variants: Sequence[Arm]) -> list[TrainingChange]:
    """Each variant's paired final-loss difference and speed against ``base``, Holm over the variants."""
    base_finals = base.finals()
    target = base.final_mean
    base_speed = base.tokens_per_s()
    raw = []
    for arm in variants:
        finals = arm.finals()
        paired = sorted(set(finals) & set(base_finals))
        stats = paired_t([finals[s] - base_finals[s] for s in paired])
        arm_speed = arm.tokens_per_s()
        log_ratios = [
            math.log(arm_speed[s] / base_speed[s]) for s in sorted(set(arm_speed) & set(base_speed))
        ]
        speed = paired_t(log_ratios)
        steps, mean = arm.mean_curve()
        raw.append((arm, stats, speed, steps_to_reach(steps, mean, target), len(paired), log_ratios))
    p_values = [stats["p_value"] if math.isfinite(stats["p_value"]) else 1.0 for _, stats, *_ in raw]
    adjusted = holm(p_values)
    changes = []
    for (arm, stats, speed, steps_needed, n, log_ratios), p_adj in zip(raw, adjusted, strict=True):
        mean_log = float(np.mean(log_ratios)) if log_ratios else math.nan
        changes.append(
            TrainingChange(
                name=arm.name,
                delta_nats=stats["mean"],
                ci_low=stats["ci_low"],
                ci_high=stats["ci_high"],
                p_value=stats["p_value"],
                p_adjusted=p_adj,
                significant=bool(
                    math.isfinite(stats["p_value"]) and p_adj <= ALPHA and not arm.diverged_seeds
                ),
                detectable_nats=stats["detectable"],
                steps_to_base_loss=steps_needed,
                tokens_per_s_delta_pct=math.expm1(mean_log) * 100.0,
                tokens_per_s_ci_pct=(
                    math.expm1(speed["ci_low"]) * 100.0,
                    math.expm1(speed["ci_high"]) * 100.0,
                ),
                paired_seeds=n,
            )
        )
    return changes


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (1 outside torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes (gloo on the CPU, NCCL on CUDA); False outside torchrun."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun on GPUs, each rank's own GPU (LOCAL_RANK)."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        local = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(local)
        return local
    return device


def _gather(runs: list[TrainRun]) -> list[TrainRun] | None:
    """Every rank's runs on rank 0 (None on the others); the runs themselves outside torchrun."""
    import torch.distributed as dist

    rank, world = _rank_and_world()
    if world == 1:
        return runs
    gathered: list[Any] = [None] * world if rank == 0 else []
    dist.gather_object([run.to_dict() for run in runs], gathered if rank == 0 else None, dst=0)
    if rank != 0:
        return None
    return [TrainRun.from_dict(data) for part in gathered for data in part]


def _advance(report: ProgressCallback, done: int, total: int, label: str, steps: int) -> None:
    report(done + steps, total, label)


def run_training_ablation(
    base: ModelConfig,
    variants: Sequence[Variant],
    recipe: Recipe,
    train_ids: torch.Tensor,
    heldout_ids: torch.Tensor,
    seeds: Sequence[int],
    *,
    device: torch.device | None = None,
    text: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingResult | None:
    """Train the base and every variant once per seed; the result (None on ranks other than 0)."""
    if not variants:
        raise ConfigError("no variants to compare; give at least one variant flag")
    if len(seeds) < 2:
        raise ConfigError("a comparison over seeds needs at least 2 seeds; give --seeds 2 or more")
    device = device if device is not None else torch.device("cpu")
    base = base.replace(max_seq_len=max(base.max_seq_len, recipe.seq_len))
    configs = {BASE: (base, {}), **{v.name: (v.config(base), dict(v.changes)) for v in variants}}
    for config, _ in configs.values():
        if config.vocab_size < int(train_ids.max()) + 1:
            raise ConfigError(
                f"the tokenizer has ids up to {int(train_ids.max())} but the model's vocab_size is "
                f"{config.vocab_size}; give the model the tokenizer's vocabulary"
            )
    heldout = heldout_windows(heldout_ids, recipe.seq_len, EVAL_WINDOWS)
    jobs = [(seed, name) for seed in seeds for name in configs]
    rank, world = _rank_and_world()
    mine = jobs[rank::world]
    total = len(mine) * recipe.steps
    report = progress or no_progress
    runs: list[TrainRun] = []
    for index, (seed, name) in enumerate(mine):
        if stop_requested() is not None:
            break
        done = index * recipe.steps
        label = f"training {name}, seed {seed} ({index + 1}/{len(mine)})"
        report(done, total, label)
        model = build_model(configs[name][0], seed, device)
        run = train_run(
            model,
            Batches(train_ids, recipe, seed),
            recipe,
            heldout,
            name=name,
            device=device,
            on_step=functools.partial(_advance, report, done, total, label),
        )
        runs.append(run)
    report(total if stop_requested() is None else len(runs) * recipe.steps, total, "training done")
    gathered = _gather(runs)
    if gathered is None:
        return None
    arms = [
        Arm(name, config, changes, sorted((r for r in gathered if r.name == name), key=lambda r: r.seed))
        for name, (config, changes) in configs.items()
    ]
    from toolkit.device import device_name

    return TrainingResult(
        base=arms[0],
        variants=arms[1:],
        changes=compare_arms(arms[0], arms[1:]),
        recipe=recipe,
        seeds=list(seeds),
        device=device_name(device),
        text=text or {},
        ranks=world,
        interrupted=any(run.interrupted for run in gathered) or len(gathered) < len(jobs),
    )
