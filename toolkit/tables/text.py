"""Tables of next-token loss on real text (load-weights)."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from toolkit.tables import fmt_int


def text_loss_table(report: dict[str, Any]) -> Table:
    """A model's loss on a text against the text's unigram entropy (``text_loss_report``'s dict)."""
    table = Table(
        title=(
            f"Next-token loss on {report['path']}: {fmt_int(report['tokens'])} tokens scored in "
            f"{report['windows']:,} windows of {report['window']}"
        ),
        title_justify="left",
    )
    table.add_column("quantity", justify="left", style="bold")
    table.add_column("value", justify="right", style="cyan")
    table.add_row(
        "loss (nats/token)",
        f"{report['loss_nats']:.4f} (95% CI {report['loss_ci_low']:.4f} .. {report['loss_ci_high']:.4f})",
    )
    table.add_row("perplexity", f"{report['perplexity']:.2f}")
    table.add_row("unigram entropy (nats/token)", f"{report['unigram_nats']:.4f}")
    table.add_row("unigram perplexity", f"{math.exp(report['unigram_nats']):.2f}")
    table.add_row("loss / unigram entropy", f"{report['loss_over_unigram']:.3f}")
    table.caption = (
        f"Tokenizer {report['tokenizer']}. Unigram entropy: the loss of predicting each token by its "
        "frequency in this text (no context). CI: bootstrap over windows."
    )
    return table
