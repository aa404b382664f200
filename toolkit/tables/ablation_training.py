"""Tables for ``toolkit ablate --train``: each variant trained from scratch against the base, over seeds."""

from __future__ import annotations

import math

from rich.table import Table

from toolkit.studies.ablation.training import TrainingChange, TrainingResult


def _nats(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _steps(value: float, total: int) -> str:
    return f"{value:.0f} / {total}" if math.isfinite(value) else f"not in {total}"


def training_table(result: TrainingResult) -> Table:
    """Variant, final loss, Δ, 95% CI, detectable, real, steps to the base's loss, tokens/s Δ%."""
    recipe = result.recipe
    seeds = ", ".join(map(str, result.seeds))
    table = Table(
        title=(
            f"Trained from scratch on {result.device}: {recipe.steps} steps × {recipe.tokens_per_step:,} "
            f"tokens ({recipe.batch} × {recipe.seq_len}), seeds {seeds}; held-out loss in nats/token"
        ),
        title_justify="left",
    )
    table.add_column("variant", style="bold", no_wrap=True)
    for header in ("params", "final loss", "Δ nats", "95% CI", "detectable", "real", "steps to base loss",
                   "tokens/s", "tokens/s Δ%"):  # fmt: skip
        table.add_column(header, justify="right", no_wrap=True, style="cyan" if header == "Δ nats" else None)
    base = result.base_dict()
    table.add_row(
        result.base.name,
        f"{base['parameters']:,}",
        f"{_nats(base['final_loss_mean'])} ± {_nats(base['final_loss_std'])}",
        "",
        "",
        "",
        "",
        _steps(base["steps_to_base_loss"], recipe.steps),
        f"{base['tokens_per_s']:,.0f}",
        "",
    )
    for index, (arm, change) in enumerate(zip(result.variants, result.changes, strict=True)):
        row = result.row_dict(index)
        speed_low, speed_high = change.tokens_per_s_ci_pct
        diverged = f"diverged (seeds {', '.join(map(str, arm.diverged_seeds))})" if arm.diverged_seeds else ""
        table.add_row(
            arm.name,
            f"{row['parameters']:,}",
            diverged or f"{_nats(row['final_loss_mean'])} ± {_nats(row['final_loss_std'])}",
            _nats(change.delta_nats, signed=True),
            f"[{_nats(change.ci_low, True)}, {_nats(change.ci_high, True)}]",
            f"{_nats(change.detectable_nats)}",
            "yes" if change.significant else "no",
            _steps(change.steps_to_base_loss, recipe.steps),
            f"{row['tokens_per_s']:,.0f}",
            f"{change.tokens_per_s_delta_pct:+.1f}% [{speed_low:+.1f}, {speed_high:+.1f}]"
            if math.isfinite(speed_low)
            else f"{change.tokens_per_s_delta_pct:+.1f}%",
        )
    table.caption = (
        "final loss: mean ± std over seeds of the held-out loss after the last step. Δ: variant − base, "
        "paired by seed; 95% CI: t-interval over seeds; detectable: the smallest Δ these seeds find 80% "
        "of the time; real: the t-test after Holm's adjustment over the variants (5%). steps to base "
        "loss: first step where the variant's mean curve reaches the base's final loss (fewer: faster "
        "per step). tokens/s Δ%: training throughput against the base (faster per second), 95% CI over seeds."
    )
    return table


def training_verdict(change: TrainingChange, diverged: list[int], steps: int) -> str:
    """One line per variant: what it does to the final loss, to steps needed, and to throughput."""
    if diverged:
        return f"diverged in seed(s) {', '.join(map(str, diverged))}: the recipe is unstable with this change"
    if not math.isfinite(change.delta_nats):
        return "not enough finished seeds to judge"
    if change.significant:
        quality = (
            f"{'worse' if change.delta_nats > 0 else 'better'} by {abs(change.delta_nats):.4f} nats (real)"
        )
    else:
        quality = f"no real loss difference (these seeds detect {change.detectable_nats:.4f} nats or more)"
    if math.isfinite(change.steps_to_base_loss):
        pace = f"reaches the base's final loss at step {change.steps_to_base_loss:.0f} of {steps}"
    else:
        pace = "does not reach the base's final loss"
    low, high = change.tokens_per_s_ci_pct
    speed_real = math.isfinite(low) and (low > 0 or high < 0)
    speed = f"tokens/s {change.tokens_per_s_delta_pct:+.1f}%{' (real)' if speed_real else ' (within noise)'}"
    return f"{quality}; {pace}; {speed}"


def training_verdict_table(result: TrainingResult) -> Table:
    table = Table(title="Verdict (trained from scratch)", title_justify="left")
    table.add_column("variant", style="bold", no_wrap=True)
    table.add_column("what training with it does")
    for arm, change in zip(result.variants, result.changes, strict=True):
        table.add_row(arm.name, training_verdict(change, arm.diverged_seeds, result.recipe.steps))
    return table
