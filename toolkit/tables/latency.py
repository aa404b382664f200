"""Tables for ``toolkit latency``: one row per swept value, and the summary of every sweep."""

from __future__ import annotations

from rich.table import Table

from toolkit.errors import setting
from toolkit.flops import FLOP_CONVENTION
from toolkit.studies.latency import LatencyReport, LatencyResult
from toolkit.studies.trends import Trend
from toolkit.tables import fmt_float
from toolkit.tables.timing import busy_text, describe_stop
from toolkit.timing.stats import WIDE_IQR, Difference, busy_cautions


def _config_text(result: LatencyResult) -> str:
    c = result.base_config
    fixed = {
        "seq-len": f"S={result.seq_len}",
        "vocab": f"V={c.vocab_size}",
        "d-model": f"d={c.d_model}",
        "heads": f"heads={c.n_heads}",
        "layers": f"layers={c.n_layers}",
        "mlp": f"d_mlp={c.d_mlp}",
        "batch": f"B={result.batch}",
    }
    return ", ".join(text for name, text in fixed.items() if name != result.vary)


def latency_table(result: LatencyResult) -> Table:
    """Median latency per value with its spread, throughput and achieved matmul rate."""
    ctx = result.context
    compiled = " compiled," if result.compiled else ""
    table = Table(
        title=f"Forward latency vs {result.vary} ({_config_text(result)}) on {ctx.device_name}, "
        f"{ctx.dtype},{compiled} {ctx.threads} threads",
        title_justify="left",
        caption=f"GFLOP/s: analytic matmul FLOP / median ({FLOP_CONVENTION}). "
        f"% matmul: of this machine's {result.matmul_gflops:,.0f} GFLOP/s {result.matmul_dtype} matmul rate "
        f"({result.matmul_size}³ product), timed interleaved with the sweep ({result.rounds} rounds). "
        "CI: 95% bootstrap CI of the median.",
        caption_justify="left",
    )
    table.add_column(result.vary, justify="right")
    table.add_column("median ms", justify="right", style="cyan")
    table.add_column("IQR ms", justify="right")
    table.add_column("95% CI ms", justify="right", no_wrap=True)
    table.add_column("± %", justify="right")
    table.add_column("tokens/s", justify="right")
    table.add_column("GFLOP/s", justify="right")
    table.add_column("% matmul", justify="right")
    table.add_column("vs *", justify="right", no_wrap=True)
    for point, row in zip(result.points, result.rows(), strict=True):
        m = point.measurement
        style = "dim" if m.rel_ci > result.target_rel_ci else None
        cells = [
            f"{point.value:,}" + (" *" if point.value == result.default_value else ""),
            fmt_float(m.median_ms),
            fmt_float(m.iqr_ms, 2),
            f"{fmt_float(m.ci_low_ms)}–{fmt_float(m.ci_high_ms)}",
            f"{100 * m.rel_ci:.1f}",
            f"{row['tokens_per_s']:,.0f}",
            fmt_float(row["gflops"]),
            f"{row['pct_of_matmul']:.0f}%",
            _vs_default_cell(point.vs_default),
        ]
        table.add_row(*cells, style=style)
    return table


def _vs_default_cell(difference: Difference | None) -> str:
    """The paired difference to the fixed config's value: '+12.3% ✓' when significant after Holm."""
    if difference is None:
        return "—"
    mark = " ✓" if difference.significant else (" (raw)" if difference.significant_raw else "")
    return f"{difference.diff_pct:+.1f}%{mark}"


def vs_default_text(result: LatencyResult) -> str | None:
    """How the points were compared with the fixed config's value, and what the run could detect."""
    differences = [p.vs_default for p in result.points if p.vs_default is not None]
    if not differences:
        return None
    detectable = sorted(d.detectable_pct for d in differences)[len(differences) // 2]
    return (
        f"vs *: paired difference to {result.vary}={result.default_value:,} (median of per-round ratios "
        f"− 1); ✓: significant at 5% after Holm's adjustment over the {len(differences)} other values, "
        f"(raw): significant alone only; smallest detectable difference ±{detectable:.1f}% (median over "
        "the values)."
    )


def trend_text(result: LatencyResult) -> str:
    """The fitted trend in words, printed under the table."""
    t: Trend = result.trend
    x = result.vary
    lines = [
        f"trend: latency ≈ {t.intercept_ms:.3g} ms + {t.slope_ms:.3g} ms × {x}  (R² {t.r2_linear:.3f})",
        f"log-log: latency ∝ {x}^{t.exponent:.2f}  (R² {t.r2_loglog:.3f})",
    ]
    if t.quadratic is not None:
        a, b, c = t.quadratic
        share = t.quadratic_share if t.quadratic_share is not None else float("nan")
        lines.append(
            f"quadratic: latency ≈ {a:.3g} + {b:.3g}·S + {c:.3g}·S² ms  (R² {t.r2_quadratic:.3f}); "
            f"the S² term is {share:.0%} of the latency at S={result.default_value}"
        )
    lines.append("* marks the fixed config's value; dim rows missed the CI target within the budget.")
    versus = vs_default_text(result)
    if versus is not None:
        lines.append(versus)
    return "\n".join(lines)


def context_text(result: LatencyResult) -> str:
    """How the sweep was timed: rounds, why it stopped, allocator and page faults."""
    ctx = result.context
    faults = max(p.measurement.page_faults_per_call for p in result.points)
    compiled = ""
    if result.compiled:
        times = ", ".join(f"{p.value:,}: {fmt_float(p.compile_s or 0.0)} s" for p in result.points)
        compiled = f"torch.compile time per {result.vary} (first call; not in the latency): {times}\n"
    return compiled + (
        f"timed interleaved: {result.rounds} rounds in {result.elapsed_s:.0f} s, "
        f"{describe_stop(result.stop_reason, result.target_rel_ci)}; minor page faults per call: "
        f"at most {faults:.1f}; allocator: {ctx.allocator}; torch {ctx.torch_version}"
    )


def summary_table(report: LatencyReport) -> Table:
    """What affects latency, and how: ms per unit and share of the default config's latency."""
    table = Table(
        title="What affects latency: each sweep's fit T(x) around the fixed config",
        title_justify="left",
        caption="ms per unit: dT/dx at the default. share: (T(default) − T(0)) / T(default), the part of "
        "the default config's latency that this parameter drives (fit linear; quadratic for seq-len; above "
        "100% when the fit's T(0) is negative). exponent: latency ∝ x^k from the log-log fit.",
        caption_justify="left",
    )
    table.add_column("parameter", justify="left")
    table.add_column("default", justify="right")
    table.add_column("ms per unit", justify="right", style="cyan")
    table.add_column("share of default latency", justify="right", style="bold")
    table.add_column("log-log exponent", justify="right")
    table.add_column("fit R²", justify="right")
    for item in sorted(report.influences, key=lambda i: -abs(i.share)):
        table.add_row(
            item.vary,
            f"{item.default_value:,}",
            fmt_float(item.slope_ms),
            f"{item.share:.0%}",
            f"{item.exponent:.2f}",
            f"{item.r2:.3f}",
        )
    return table


def sweep_notes(result: LatencyResult, threads: int | None = None) -> list[str]:
    """The sweep's cautions, condensed: which values missed the CI target, which varied, how busy it was."""
    out = []
    missed = [
        f"{result.vary}={p.value}" for p in result.points if p.measurement.rel_ci > result.target_rel_ci
    ]
    if missed and result.stop_reason != "interrupted":  # an interrupted run says so once, in finish
        out.append(
            f"{len(missed)} of {len(result.points)} values missed the ±{result.target_rel_ci:.1%} CI target "
            f"within {result.budget_s:g} s per value ({', '.join(missed)}); raise {setting('budget_s')} "
            "for tighter estimates"
        )
    wide = [f"{result.vary}={p.value}" for p in result.points if p.measurement.rel_iqr > WIDE_IQR]
    if wide:
        out.append(f"calls varied a lot (IQR above {WIDE_IQR:.0%} of the median) at {', '.join(wide)}")
    return out + [busy_text(c.value, threads) for c in busy_cautions(result.others_cpu_share)]
