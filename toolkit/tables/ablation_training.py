"""Tables for ``toolkit ablate --train``: each variant trained from scratch against the base, over seeds."""

from __future__ import annotations

import math

from rich.table import Table

from toolkit.studies.ablation.training import TrainingChange, TrainingResult
from toolkit.tables import nats_text


def _steps(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) else "never"


def _pct_bound(value: float) -> str:
    """A percentage bound of at most four characters (a CI over 2-3 seeds can be very wide)."""
    if value >= 1000:
        return ">999"
    return f"{value:+.0f}"


def _loss(mean: float, std: float) -> str:
    return f"{nats_text(mean)} ± {nats_text(std)}" if math.isfinite(std) else nats_text(mean)


def training_table(result: TrainingResult) -> Table:
    """Variant, final loss, Δ, 95% CI, detectable, real, steps to the base's loss, tokens/s Δ%; wrapped
    (never cut) to fit a 100-column terminal."""
    recipe = result.recipe
    seeds = ", ".join(map(str, result.seeds))
    table = Table(
        title=(
            f"Trained from scratch on {result.device}: {recipe.steps} steps × {recipe.tokens_per_step:,} "
            f"tokens ({recipe.batch} × {recipe.seq_len}), seeds {seeds}; held-out loss in nats/token"
        ),
        title_justify="left",
    )
    table.add_column("variant", style="bold", min_width=11)  # "no-mlp-skip" whole on its line
    widths = {"final loss": 8, "Δ nats": 9, "95% CI (±)": 9, "detectable": 10, "real": 4,
              "steps to base loss": 5, "tokens/s Δ% (95% CI)": 12}  # fmt: skip
    for header, width in widths.items():
        style = "cyan" if header == "Δ nats" else None
        table.add_column(header, justify="right", min_width=width, max_width=max(width, 9), style=style)
    base = result.base_dict()
    base_row = [_loss(base["final_loss_mean"], base["final_loss_std"]), "", "", "", ""]
    table.add_row(
        result.base.name, *base_row, _steps(base["steps_to_base_loss"]), f"{base['tokens_per_s']:,.0f}/s"
    )
    parameters = [f"base {result.base.parameters:,}"]
    for index, (arm, change) in enumerate(zip(result.variants, result.changes, strict=True)):
        row = result.row_dict(index)
        if arm.parameters != result.base.parameters:
            parameters.append(f"{arm.name} {arm.parameters:,}")
        low, high = change.tokens_per_s_ci_pct
        speed = f"{change.tokens_per_s_delta_pct:+.1f}%"
        if math.isfinite(low):
            speed += f" ({_pct_bound(low)}..{_pct_bound(high)})"
        seeds_out = ", ".join(map(str, arm.diverged_seeds))
        table.add_row(
            arm.name,
            f"diverged (seeds {seeds_out})"
            if seeds_out
            else _loss(row["final_loss_mean"], row["final_loss_std"]),
            nats_text(change.delta_nats, signed=True),
            "±" + nats_text((change.ci_high - change.ci_low) / 2),
            nats_text(change.detectable_nats),
            "yes" if change.significant else "no",
            _steps(change.steps_to_base_loss),
            speed,
        )
    table.caption = (
        f"parameters: {'; '.join(parameters)}. final loss: mean ± std over seeds of the held-out loss after "
        "the last step. Δ: variant − base, paired by seed; 95% CI: Δ ± this, the t-interval over seeds; "
        "detectable: the smallest Δ these seeds find 80% of the time; real: the t-test after Holm's "
        "adjustment over the variants (5%). steps to base loss: where the variant's mean curve first "
        "reaches the base's final "
        f"loss (fewer than {recipe.steps}: faster per step; never: not within the run). tokens/s Δ%: "
        "training throughput "
        "against the base (faster per second)."
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
        quality = (
            f"no real loss difference (these seeds detect {nats_text(change.detectable_nats)} nats or more)"
        )
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
