"""The training comparison's picture: held-out loss against steps, the mean and the seed band per arm."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from toolkit.plots.figure import save_figure
from toolkit.studies.ablation.training import TrainingResult


def save_training_plot(result: TrainingResult, path: Path) -> Path:
    """Held-out loss (nats/token) against training steps: per arm the mean over seeds, the band its
    min and max, the base's final loss dashed; a second panel zooms on the last half of training."""
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    whole, zoom = figure.subplots(1, 2)
    final = result.base_final
    half = result.recipe.steps / 2
    zoom_values: list[float] = []  # every loss of the second half, to fit the zoom's y range
    for arm in (result.base, *result.variants):
        steps, losses = arm.curves()
        if not losses.size:
            continue
        zoom_values += losses[:, steps >= half].ravel().tolist()
        base = arm is result.base  # drawn black and on top: every variant is read against it
        label = f"{arm.name} ({losses.shape[0]} seeds)"
        for ax in (whole, zoom):
            (line,) = ax.plot(
                steps, losses.mean(axis=0), marker="o", markersize=3, label=label,
                color="black" if base else None, linewidth=2.0 if base else 1.5, zorder=5 if base else 3,
            )  # fmt: skip
            band = (losses.min(axis=0), losses.max(axis=0))
            ax.fill_between(steps, *band, color=line.get_color(), alpha=0.15, linewidth=0)
    for ax in (whole, zoom):
        ax.axhline(final, color="0.3", linestyle="--", linewidth=0.8, label=f"base final loss {final:.3f}")
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out loss (nats/token)")
        ax.grid(True, alpha=0.3)
    if zoom_values:
        spread = max(zoom_values) - min(zoom_values)
        zoom.set_xlim(half, result.recipe.steps * 1.02)
        zoom.set_ylim(min(zoom_values) - 0.05 * spread, max(zoom_values) + 0.05 * spread)
    seeds = ", ".join(map(str, result.seeds))
    whole.set_title(f"Trained from scratch: mean over seeds {seeds}, band min-max")
    zoom.set_title("second half of training")
    zoom.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    return save_figure(figure, path)
