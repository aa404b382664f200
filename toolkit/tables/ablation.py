"""Tables for ``toolkit ablate``: output change, latency change, and one verdict per variant."""

from __future__ import annotations

from rich.table import Table

from toolkit.studies.ablation import AblationResult
from toolkit.tables import fmt_float


def output_table(result: AblationResult) -> Table:
    """Base minus variant over all logits of all examples (float64), one row per variant."""
    table = Table(
        title=(
            f"Output change, base − variant, over {result.n_positions:,} positions × "
            f"{result.base_config.vocab_size} logits of {result.n_examples} example(s) "
            f"(forward and metrics in {result.output_dtype})"
        ),
        title_justify="left",
    )
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    for header in (
        "RMSE",
        "RMSE / std",
        "mean |Δ|",
        "std |Δ|",
        "base > var",
        "max |Δ|",
        "KL (nats)",
        "top-1 agree",
    ):
        table.add_column(header, justify="right", style="cyan" if header == "RMSE / std" else None)
    for row in result.rows:
        output = row.output
        table.add_row(
            row.change,
            fmt_float(output.rmse),
            f"{100 * output.rmse_over_base_std:.3g}%",
            fmt_float(output.mean_abs_diff),
            fmt_float(output.std_abs_diff),
            f"{output.pct_base_greater:.1f}%",
            fmt_float(output.max_abs_diff),
            fmt_float(output.kl),
            f"{output.top1_agreement:.2f}%",
        )
    base_std = result.rows[0].output.base_std
    table.caption = f"RMSE / std: RMSE over the standard deviation of the base logits ({base_std:.3g})."
    return table


def latency_table(result: AblationResult) -> Table | None:
    """Forward latency of each variant against the baseline (medians; paired difference with 95% CI)."""
    study = result.latency
    if study is None:
        return None
    context = study.context
    table = Table(
        title=(
            f"Forward latency, batch {study.batch} × {study.seq_len} tokens, {context['dtype']} on "
            f"{context['device_name']} ({context['threads']} threads), interleaved, {study.rounds} rounds"
        ),
        title_justify="left",
    )
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    table.add_column("base ms", justify="right")
    table.add_column("variant ms", justify="right")
    table.add_column("Δ ms", justify="right")
    table.add_column("Δ %", justify="right", style="cyan")
    table.add_column("95% CI of Δ", justify="right")
    table.add_column("significant", justify="center")
    for row in result.rows:
        latency = row.latency
        if latency is None:
            continue
        table.add_row(
            row.change,
            f"{latency.base_ms:.3f}",
            f"{latency.variant_ms:.3f}",
            f"{latency.diff_ms:+.3f}",
            f"{latency.diff_pct:+.2f}%",
            f"{latency.ci_low_pct:+.2f}% .. {latency.ci_high_pct:+.2f}%",
            "[bold]yes[/bold]" if latency.significant else "no",
        )
    table.caption = (
        f"A/A control (baseline against itself): {study.aa_diff_pct:+.2f}%; "
        f"noise floor ±{study.noise_floor_pct:.2f}%. "
        "Δ = median of per-round paired ratios − 1 (Δ ms = base ms × Δ %); "
        "significant = CI excludes 0 and |Δ| > noise floor."
    )
    return table


def verdict_table(result: AblationResult) -> Table:
    """One plain-language sentence per variant."""
    table = Table(title="Verdict", title_justify="left")
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    table.add_column("what it does", justify="left")
    for row in result.rows:
        table.add_row(row.change, row.verdict)
    return table
