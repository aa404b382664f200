"""The ablation plot from a real (tiny) run: labelled axes, every variant in the legend, no text
over another, and nothing over a point."""

from __future__ import annotations

import torch
from plot_layout import assert_readable
from tiny import TINY

from toolkit.model import Transformer
from toolkit.plots.ablation import ablation_figure
from toolkit.studies.ablation import run_ablation, select_variants
from toolkit.studies.settings import ForwardTiming


def test_every_variant_is_named_once_and_nothing_overlaps() -> None:
    model = Transformer(TINY).eval()
    variants = select_variants(
        TINY, eps=1e-4, no_scale=True, gelu="tanh", residuals=["input-skip", "no-mlp-skip", "parallel"]
    )
    timing = ForwardTiming(device=torch.device("cpu"), seq_len=8, budget_s=0.0, warmup=1)
    result = run_ablation(model, [torch.arange(9)], variants, timing)
    figure = ablation_figure(result)
    assert_readable(figure)
    ax = figure.axes[0]
    legend = ax.get_legend()
    names = [text.get_text() for text in legend.get_texts()]
    assert [name.removesuffix(" (significant)") for name in names[1:]] == [v.name for v in variants]
    assert names[0].startswith("A/A noise floor")
    # the legend sits beside the axes, so it covers no point
    figure.canvas.draw()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
