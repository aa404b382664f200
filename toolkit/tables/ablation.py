"""Tables for ``toolkit ablate``: output change, latency change, and one verdict per variant."""

from __future__ import annotations

from rich.table import Table

from toolkit.errors import setting
from toolkit.studies.ablation import AblationResult, AblationRow, LatencyStudy
from toolkit.tables import fmt_float, nats_text
from toolkit.tables.timing import caution_text
from toolkit.timing.stats import ARMS_DIFFER


def output_table(result: AblationResult) -> Table:
    """How far the logits move: base minus variant over all logits of all examples (float64)."""
    table = Table(
        title=(
            f"Output change (logits), base − variant, over {result.n_positions:,} positions × "
            f"{result.base_config.vocab_size} logits of {result.n_examples} example(s) "
            f"(forward and metrics in {result.output_dtype})"
        ),
        title_justify="left",
    )
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    for header in ("RMSE", "RMSE / std", "mean |Δ|", "std |Δ|", "max |Δ|"):
        table.add_column(
            header, justify="right", no_wrap=True, style="cyan" if header == "RMSE / std" else None
        )
    for row in result.rows:
        output = row.output
        table.add_row(
            row.change,
            fmt_float(output.rmse) + (" ‡" if output.below_float32_noise else ""),
            f"{100 * output.rmse_over_base_std:.3g}%",
            fmt_float(output.mean_abs_diff),
            fmt_float(output.std_abs_diff),
            fmt_float(output.max_abs_diff),
        )
    base_std, noise = result.rows[0].output.base_std, result.rows[0].output.float32_noise_rmse
    table.caption = (
        f"RMSE / std: RMSE over the standard deviation of the base logits ({base_std:.3g}). ‡: below "
        f"float32 noise: the change moves the logits less than running the base model in float32 does "
        f"(RMSE {noise:.3g}), so it is not an effect one could see in float32."
    )
    return table


def prediction_table(result: AblationResult) -> Table:
    """What the change does to the next-token predictions, one row per variant."""
    table = Table(title="Prediction change", title_justify="left")
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    for header in ("base > variant", "KL(base ‖ variant), nats", "top-1 agreement"):
        table.add_column(header, justify="right", no_wrap=True, style="cyan" if "top-1" in header else None)
    for row in result.rows:
        output = row.output
        table.add_row(
            row.change,
            f"{output.pct_base_greater:.1f}%",
            fmt_float(output.kl),
            f"{output.top1_agreement:.2f}%",
        )
    table.caption = (
        "base > variant: share of logits the change lowers; KL: mean over positions of the "
        "next-token distributions; top-1 agreement: positions whose most likely token is unchanged."
    )
    return table


def text_loss_table(result: AblationResult) -> Table | None:
    """Next-token loss on real text: each variant's, with the paired difference to the base and its CI."""
    text = result.text
    losses = [(row.change, row.text_loss) for row in result.rows if row.text_loss is not None]
    if text is None or not losses:
        return None
    first = losses[0][1]
    table = Table(
        title=(
            f"Next-token loss on {text['path']}: {text['tokens']:,} tokens scored in {text['windows']:,} "
            f"windows of {text['window']}; base model {first.base_nats:.4f} nats/token"
        ),
        title_justify="left",
    )
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    for header in ("variant", "Δ", "95% CI of Δ", "detectable", "ppl ×", "real"):
        table.add_column(header, justify="center" if header == "real" else "right", no_wrap=True)
    for change, loss in losses:
        table.add_row(
            change,
            f"{loss.variant_nats:.4f}",
            nats_text(loss.delta_nats, signed=True) + (" ‡" if loss.below_float32_noise else ""),
            f"{nats_text(loss.ci_low, signed=True)}..{nats_text(loss.ci_high, signed=True)}",
            f"±{loss.detectable_nats:.2g}",
            f"{loss.perplexity_ratio:.4f}",
            _verdict(loss.significant, loss.significant_raw),
        )
    table.caption = (
        f"Losses in nats/token. Tokenizer {text['tokenizer']}; unigram entropy of the text "
        f"{text['unigram_nats']:.4f} nats/token. Δ = variant − base; CI: paired bootstrap over windows "
        f"(same windows for both); real: the CI excludes 0 after Holm's adjustment over the "
        f"{first.family_size} variants (raw only: alone, not as one of them) and |Δ| is above the "
        f"float32 noise of the loss (‡: below it, {first.float32_noise_nats:.1e} nats, the base model's "
        "float32 vs float64 window losses); detectable: the smallest Δ these windows find 80% of the "
        "time. ppl × = perplexity ratio exp(Δ)."
    )
    return table


def latency_table(result: AblationResult) -> Table | None:
    """Forward latency of each variant against the baseline (medians; paired difference with 95% CI)."""
    study = result.latency
    rows = [(row.change, row.latency) for row in result.rows if row.latency is not None]
    if study is None or not rows:
        return None
    context = study.context
    table = Table(
        title=(
            f"Forward latency, batch {study.batch} × {study.seq_len} tokens, {context['dtype']} on "
            f"{context['device_name']} ({context['threads']} threads), interleaved, {study.rounds} rounds; "
            f"baseline {rows[0][1].base_ms:.3f} ms (median)"
        ),
        title_justify="left",
    )
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    for header in ("variant ms", "Δ ms", "Δ %", "95% CI of Δ", "detectable", "real"):
        table.add_column(
            header,
            justify="center" if header == "real" else "right",
            style="cyan" if header == "Δ %" else None,
        )
    for change, latency in rows:
        table.add_row(
            change,
            f"{latency.variant_ms:.3f}",
            f"{latency.diff_ms:+.3f}",
            f"{latency.diff_pct:+.2f}%",
            f"{latency.ci_low_pct:+.2f}%..{latency.ci_high_pct:+.2f}%",
            f"±{latency.detectable_pct:.2f}%",
            _verdict(latency.significant, latency.significant_raw),
        )
    table.caption = (
        f"A/A control (the baseline's architecture as an arm of its own): {study.aa_diff_pct:+.2f}%, "
        f"95% CI within ±{study.noise_floor_pct:.2f}%. "
        "Δ = median of per-round paired ratios − 1 (Δ ms = base ms × Δ %); CI: order statistics of the "
        f"median, exact sign test; real: significant at 5% after Holm's adjustment over the {len(rows)} "
        "variants (raw only: significant alone, not as one of them); detectable: the smallest Δ this "
        "run finds 80% of the time."
    )
    return table


def _verdict(significant: bool, significant_raw: bool) -> str:
    if significant:
        return "[bold]yes[/bold]"
    return "raw only" if significant_raw else "no"


def verdict_table(result: AblationResult) -> Table:
    """One plain-language sentence per variant."""
    table = Table(title="Verdict", title_justify="left")
    table.add_column("change", justify="left", style="bold", no_wrap=True)
    table.add_column("what it does", justify="left")
    for row in result.rows:
        table.add_row(row.change, verdict_text(row))
    return table


def verdict_text(row: AblationRow) -> str:
    """A plain-language sentence for one variant: how far the logits moved, and the latency change."""
    output, latency = row.output, row.latency
    text = f"moves logits by {_pct(100.0 * output.rmse_over_base_std)} of their spread"
    if output.below_float32_noise:
        text += " (below float32 noise: less than running the base in float32 moves them)"
    if output.top1_agreement < 100.0:
        text += f", changes the top-1 token at {_pct(100.0 - output.top1_agreement)} of positions"
    else:
        text += ", top-1 token unchanged"
    loss = row.text_loss
    if loss is not None:
        if loss.significant:
            direction = "raises" if loss.delta_nats > 0 else "lowers"
            text += (
                f"; {direction} the text loss by {abs(loss.delta_nats):.3g} nats/token "
                f"(95% CI {loss.ci_low:+.3g}..{loss.ci_high:+.3g}, perplexity ×{loss.perplexity_ratio:.3f})"
            )
        elif loss.below_float32_noise:
            text += f"; text-loss change {loss.delta_nats:+.1e} nats is below float32 noise"
        else:
            text += f"; no text-loss change beyond noise (below ±{loss.detectable_nats:.2g} nats/token)"
    if latency is None:
        return text
    if latency.significant:
        direction = "slower" if latency.diff_pct > 0 else "faster"
        text += (
            f"; {abs(latency.diff_pct):.1f}% {direction} "
            f"(95% CI {latency.ci_low_pct:+.1f}%..{latency.ci_high_pct:+.1f}%)"
        )
    else:
        text += f"; no latency change beyond noise (below ±{latency.detectable_pct:.1f}%)"
    return text


def _pct(value: float) -> str:
    if value == 0:
        return "0%"
    if abs(value) < 0.01:
        return f"{value:.1e}%"
    if abs(value) < 10:
        return f"{value:.2f}%"
    return f"{value:.0f}%"


def latency_notes(study: LatencyStudy, threads: int | None = None) -> list[str]:
    """The latency run's cautions: the per-arm spread folded into one line, then the run-level ones."""
    run_level = [caution_text(c, threads) for c in study.cautions if not c.subject or c.kind == ARMS_DIFFER]
    if study.max_rel_ci > study.target_rel_ci:
        run_level.insert(
            0,
            f"timings are noisy: IQR up to {study.max_rel_iqr:.0%} of the median, medians' 95% CIs up to "
            f"±{study.max_rel_ci:.1%} (target ±{study.target_rel_ci:.0%}) after {study.rounds} rounds; "
            f"raise {setting('budget_s')} or time on an idle machine for a tighter estimate",
        )
    return run_level
