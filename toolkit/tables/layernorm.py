"""Tables for ``toolkit layernorm-compare``: numerics, speed, memory and training, one unit per column."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from toolkit.studies.layernorm import (
    IMPLEMENTATION_LABELS,
    NORM_LABELS,
    MemoryResult,
    NumericsResult,
    SpeedResult,
    TrainingResult,
)
from toolkit.tables import fmt_float

BAD_ERROR = 1e-2  # a relative error this large is a failure, not rounding


def _label(name: str) -> str:
    return escape(IMPLEMENTATION_LABELS.get(name, name))  # labels hold brackets: E[x²]


def _error(value: float) -> str:
    if math.isnan(value):
        return "[red]NaN/inf[/red]"
    text = f"{value:.1e}" if value else "0"
    return f"[red]{text}[/red]" if value > BAD_ERROR else text


def numerics_table(result: NumericsResult) -> Table:
    """Relative errors against the float64 reference, per implementation, dtype and input."""
    M, N = result.shape
    table = Table(
        title=f"LayerNorm numerics: {M}×{N} rows, eps {result.eps:g}, on {result.device}",
        title_justify="left",
        caption="error = max |value − float64 reference| / max |reference|, per tensor; the reference uses "
        "the same rounded inputs. x = offset + N(0,1), weight = 1 + N(0,0.1²), bias = N(0,0.1²), "
        "dy = N(0,1). "
        "bit-equal: share of outputs identical to torch's bit for bit. Red: error > 1e-2.",
        caption_justify="left",
    )
    table.add_column("implementation")
    table.add_column("dtype")
    table.add_column("input x")
    for name in ("output y", "grad x", "grad weight", "grad bias"):
        table.add_column(name, justify="right")
    table.add_column("output max abs err", justify="right")
    table.add_column("bit-equal to torch", justify="right")
    previous = None
    for row in result.rows:
        key = (row.dtype, row.offset)
        if previous is not None and key != previous:
            table.add_section()
        previous = key
        table.add_row(
            _label(row.implementation),
            row.dtype,
            row.case,
            _error(row.output_error),
            _error(row.grad_input_error),
            _error(row.grad_weight_error),
            _error(row.grad_bias_error),
            _error(row.output_abs_error)
            if math.isnan(row.output_abs_error)
            else f"{row.output_abs_error:.1e}",
            f"{row.bitwise_equal_pct:.1f}%",
        )
    return table


def speed_table(result: SpeedResult) -> Table:
    """Median time, achieved bandwidth against this run's copy bandwidth, and the ratio to torch."""
    table = Table(
        title=f"LayerNorm speed on {result.device}, {result.dtype}, {result.threads} threads "
        "(interleaved, A/A-controlled)",
        title_justify="left",
        caption="GB/s = bytes moved / median time: forward 2·M·N·bytes (read x, write y), forward+backward "
        "5·M·N·bytes (+ read x, dy, write dx). % copy: of y.copy_(x)'s GB/s, timed in the same "
        "interleaved rounds. "
        "× torch: paired median ratio with 95% CI; * = significant (CI excludes 1 and beyond the A/A noise "
        f"floor). Allocator: {result.allocator}.",
        caption_justify="left",
    )
    table.add_column("M×N", justify="right")
    table.add_column("pass")
    table.add_column("implementation")
    table.add_column("median ms", justify="right", style="cyan")
    table.add_column("IQR ms", justify="right")
    table.add_column("GB/s", justify="right")
    table.add_column("% copy", justify="right")
    table.add_column("× torch (95% CI)", justify="right")
    table.add_column("faults/call", justify="right")
    previous = None
    for row in result.rows:
        key = (row.rows, row.row_size, row.pass_name)
        if previous is not None and key != previous:
            table.add_section()
        previous = key
        if row.implementation in ("torch", "copy"):
            ratio = "1 (baseline)" if row.implementation == "torch" else "—"
        else:
            star = " *" if row.significant else ""
            ratio = f"{row.ratio_to_torch:.2f} ({row.ratio_ci_low:.2f}–{row.ratio_ci_high:.2f}){star}"
        table.add_row(
            f"{row.rows}×{row.row_size}",
            row.pass_name,
            _label(row.implementation),
            fmt_float(row.timing.median_ms),
            fmt_float(row.timing.iqr_ms, 2),
            fmt_float(row.gb_per_s),
            f"{row.pct_of_copy:.0f}%",
            ratio,
            f"{row.timing.page_faults_per_call:.1f}",
        )
    return table


def memory_table(result: MemoryResult) -> Table:
    """Bytes saved for backward and the forward+backward peak, in MB and as multiples of the input."""
    M, N = result.shape
    table = Table(
        title=f"LayerNorm memory: {M}×{N} {result.dtype} input on {result.device}",
        title_justify="left",
        caption="saved: distinct storages autograd keeps for backward (saved-tensor hooks); beyond "
        "input+params: those that are neither the input nor a parameter. peak: "
        f"{result.peak_method}, forward+backward, beyond memory held before. MB = 10^6 bytes.",
        caption_justify="left",
    )
    table.add_column("implementation")
    table.add_column("saved MB", justify="right", style="cyan")
    table.add_column("saved / input", justify="right")
    table.add_column("beyond input+params MB", justify="right")
    table.add_column("peak MB", justify="right", style="cyan")
    table.add_column("peak / input", justify="right")
    for row in result.rows:
        table.add_row(
            _label(row.implementation),
            f"{row.saved_bytes / 1e6:,.2f}",
            f"{row.saved_vs_input:.2f}×",
            f"{row.saved_extra_bytes / 1e6:,.3f}",
            f"{row.peak_bytes / 1e6:,.2f}",
            f"{row.peak_vs_input:.2f}×",
        )
    return table


QUALITY_COLUMNS = (
    ("val loss", "final_val_loss", "{:.3f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("steps to 90%", "steps_to_90pct", "{:.0f}"),
    ("loss std", "loss_std", "{:.4f}"),
)
COST_COLUMNS = (
    ("steps/s", "steps_per_s", "{:.2f}"),
    ("wall s", "wall_s", "{:.1f}"),
    ("peak MB", "peak_memory_bytes", "{:.2f}"),
)


def _metric_cells(result: TrainingResult, norm: str, columns: tuple[tuple[str, str, str], ...]) -> list[str]:
    """Formatted values, each with its % difference against torch LayerNorm."""
    run = result.run(norm)
    assert run is not None
    cells = []
    for _, metric, fmt in columns:
        value = float(getattr(run, metric))
        if metric == "peak_memory_bytes":
            value /= 1e6
        text = "—" if math.isnan(value) else fmt.format(value)
        pct = result.pct_vs_torch(norm, metric)
        if norm != "torch" and not math.isnan(pct):
            text += f" ({pct:+.1f}%)"
        cells.append(text)
    return cells


def _settings_text(result: TrainingResult) -> str:
    s = result.settings
    return (
        f"byte-level GPT ({s.model.n_layers} layers, d {s.model.d_model}, {s.model.n_heads} heads), "
        f"batch {s.batch}×{s.seq_len} bytes, {s.steps} steps, AdamW lr {s.lr:g}, seed {s.seed}, "
        f"on {result.device}"
    )


def training_table(result: TrainingResult) -> Table:
    """Per normalisation: final quality, convergence and stability; % against torch LayerNorm."""
    corpus = result.corpus
    table = Table(
        title=f"Training quality: {_settings_text(result)}",
        title_justify="left",
        caption=f"data: {escape(corpus['source'])} ({corpus['files']} files, "
        f"{corpus['train_bytes']:,} train / {corpus['validation_bytes']:,} validation bytes). "
        "val loss: nats per byte, eval mode; perplexity per byte. (±x%): against torch LayerNorm. "
        "steps to 90%: first step where the smoothed training loss made 90% of its final improvement. "
        "loss std: training loss over the last steps, detrended.",
        caption_justify="left",
    )
    table.add_column("normalisation")
    for header, _, _ in QUALITY_COLUMNS:
        table.add_column(header, justify="right")
    for run in result.runs:
        table.add_row(NORM_LABELS.get(run.norm, run.norm), *_metric_cells(result, run.norm, QUALITY_COLUMNS))
    return table


def training_cost_table(result: TrainingResult) -> Table:
    """Per normalisation: speed, memory, and what the normalisation did to the activations."""
    table = Table(
        title="Training cost and activations",
        title_justify="left",
        caption=f"wall s: training steps only, evaluation excluded. peak: {result.peak_method}. "
        "act. mean/var: of every norm layer's output on a validation batch (averaged over layers). "
        "|corr|: mean absolute correlation between hidden units, before → after the last block's first norm.",
        caption_justify="left",
    )
    table.add_column("normalisation")
    for header, _, _ in COST_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("act. mean", justify="right")
    table.add_column("act. var", justify="right")
    table.add_column("|corr| before → after", justify="right")
    for run in result.runs:
        table.add_row(
            NORM_LABELS.get(run.norm, run.norm),
            *_metric_cells(result, run.norm, COST_COLUMNS),
            fmt_float(run.activation_mean),
            fmt_float(run.activation_var),
            f"{run.mean_abs_correlation_before:.2f} → {run.mean_abs_correlation_after:.2f}",
        )
    return table
