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


SHORT_LABELS = {
    "torch": "torch",
    "custom-torch-ops": "custom torch-ops",
    "custom-numba": "custom numba",
    "custom-triton": "custom triton",
    "autograd-ops": "autograd ops",
    "one-pass": "one-pass",
    "torch-layernorm": "torch LayerNorm",
    "copy": "copy x → y",
}
"""Table labels: short enough that a 100-column terminal shows every number (captions spell them out)."""

LABEL_CAPTION = escape(
    "torch: torch.nn.LayerNorm; custom: the toolkit's LayerNorm on the named backend; autograd ops: "
    "plain ops differentiated by autograd; one-pass: variance as E[x²]−E[x]²."
)
RMS_LABEL_CAPTION = escape(
    "torch: torch.nn.RMSNorm (F.rms_norm); custom: the toolkit's RMSNorm on the named backend; autograd "
    "ops: transformers' LlamaRMSNorm chain of ops, differentiated by autograd; torch LayerNorm: "
    "torch.nn.LayerNorm on the same input, for scale."
)
NORM_NAMES = {"layer": "LayerNorm", "rms": "RMSNorm"}


def _caption(norm: str) -> str:
    return RMS_LABEL_CAPTION if norm == "rms" else LABEL_CAPTION


def _label(name: str) -> str:
    return escape(SHORT_LABELS.get(name, IMPLEMENTATION_LABELS.get(name, name)))


def _error(value: float) -> str:
    if math.isnan(value):
        return "[red]NaN/inf[/red]"
    text = f"{value:.1e}" if value else "0"
    return f"[red]{text}[/red]" if value > BAD_ERROR else text


def _offset(value: float) -> str:
    return "0" if value == 0 else f"{value:g}"


def numerics_tables(result: NumericsResult) -> list[Table]:
    """Relative errors against the float64 reference, one table per dtype, a section per input."""
    M, N = result.shape
    tables = []
    dtypes = list(dict.fromkeys(row.dtype for row in result.rows))
    for dtype in dtypes:
        table = Table(
            title=f"{NORM_NAMES[result.norm]} numerics, {dtype}: {M}×{N} rows, eps {result.eps:g}, on "
            f"{result.device}",
            title_justify="left",
            caption_justify="left",
        )
        table.add_column("implementation", no_wrap=True)
        table.add_column("x offset", justify="right", no_wrap=True)
        for name in ("err y", "err dx", "err dw", "err db", "max |Δy|"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("bit-equal", justify="right", no_wrap=True)
        previous = None
        for row in (r for r in result.rows if r.dtype == dtype):
            if previous is not None and row.offset != previous:
                table.add_section()
            previous = row.offset
            table.add_row(
                _label(row.implementation),
                _offset(row.offset),
                _error(row.output_error),
                _error(row.grad_input_error),
                _error(row.grad_weight_error),
                "—" if result.norm == "rms" else _error(row.grad_bias_error),
                _error(row.output_abs_error)
                if math.isnan(row.output_abs_error)
                else f"{row.output_abs_error:.1e}",
                f"{row.bitwise_equal_pct:.1f}%",
            )
        tables.append(table)
    if tables:
        tables[-1].caption = (
            "err = max |value − float64 reference| / max |reference| of y and of the gradients dx, "
            "dweight, dbias (— : an RMSNorm has no bias); max |Δy|: the output's largest absolute error. "
            "The reference uses the same rounded inputs: x = offset + N(0,1), weight = 1 + N(0,0.1²), "
            "bias = N(0,0.1²), dy = N(0,1). bit-equal: share of outputs identical to torch's bit for bit. "
            f"Red: error > 1e-2. {_caption(result.norm)}"
        )
    return tables


def speed_tables(result: SpeedResult) -> list[Table]:
    """Per pass: median time, bandwidth against this run's copy bandwidth, and the ratio to torch."""
    tables = []
    passes = list(dict.fromkeys(row.pass_name for row in result.rows))
    for pass_name in passes:
        table = Table(
            title=f"{NORM_NAMES[result.norm]} speed, {pass_name}, on {result.device}, {result.dtype}, "
            f"{result.threads} "
            "threads (interleaved, A/A-controlled; times in ms)",
            title_justify="left",
            caption_justify="left",
        )
        table.add_column("M×N", justify="right", no_wrap=True)
        table.add_column("implementation", no_wrap=True)
        table.add_column("median", justify="right", style="cyan", no_wrap=True)
        table.add_column("IQR", justify="right", no_wrap=True)
        table.add_column("GB/s", justify="right", no_wrap=True)
        table.add_column("% copy", justify="right", no_wrap=True)
        table.add_column("× torch", justify="right", no_wrap=True)
        table.add_column("95% CI", justify="right", no_wrap=True)
        table.add_column("faults", justify="right", no_wrap=True)
        previous = None
        for row in (r for r in result.rows if r.pass_name == pass_name):
            key = (row.rows, row.row_size)
            if previous is not None and key != previous:
                table.add_section()
            previous = key
            if row.implementation in ("torch", "copy"):
                ratio, interval = ("1", "baseline") if row.implementation == "torch" else ("—", "")
            else:
                ratio = f"{row.ratio_to_torch:.2f}{' *' if row.significant else ''}"
                interval = f"{row.ratio_ci_low:.2f}–{row.ratio_ci_high:.2f}"
            table.add_row(
                f"{row.rows}×{row.row_size}",
                _label(row.implementation),
                fmt_float(row.timing.median_ms),
                fmt_float(row.timing.iqr_ms, 2),
                fmt_float(row.gb_per_s),
                f"{row.pct_of_copy:.0f}%",
                ratio,
                interval,
                f"{row.timing.page_faults_per_call:.1f}",
            )
        detectable = _detectable_text(result, pass_name)
        if detectable:
            table.caption = detectable
        tables.append(table)
    if tables:
        tables[-1].caption = (
            (f"{tables[-1].caption} " if tables[-1].caption else "")
            + "GB/s = bytes moved / median time: forward 2·M·N·bytes (read x, write y), forward+backward "
            "5·M·N·bytes (+ read x, dy, write dx). % copy: of y.copy_(x)'s GB/s, timed in the same "
            "interleaved rounds. × torch: paired median ratio with its 95% CI; * = significant at 5% (exact "
            "sign test, Holm over the implementations of one shape and pass); detectable: the smallest "
            "difference from torch the run finds 80% of the time. faults: page faults per call. "
            f"Allocator: {result.allocator}. {_caption(result.norm)}"
        )
    return tables


def _detectable_text(result: SpeedResult, pass_name: str) -> str:
    """The smallest detectable difference from torch per shape (the largest over its implementations)."""
    per_shape: dict[str, float] = {}
    for row in result.rows:
        if row.pass_name == pass_name and math.isfinite(row.detectable_pct):
            shape = f"{row.rows}×{row.row_size}"
            per_shape[shape] = max(per_shape.get(shape, 0.0), row.detectable_pct)
    if not per_shape:
        return ""
    shapes = ", ".join(f"±{pct:.1f}% at {shape}" for shape, pct in per_shape.items())
    return f"Detectable ({pass_name}): {shapes}."


def memory_table(result: MemoryResult) -> Table:
    """Bytes saved for backward and the forward+backward peak, in MB and as multiples of the input."""
    M, N = result.shape
    table = Table(
        title=f"{NORM_NAMES[result.norm]} memory: {M}×{N} {result.dtype} input on {result.device}",
        title_justify="left",
        caption="saved: distinct storages autograd keeps for backward (saved-tensor hooks); beyond "
        "input+params: those that are neither the input nor a parameter. peak: "
        f"{result.peak_method}, forward+backward, beyond memory held before. MB = 10^6 bytes. "
        f"{_caption(result.norm)}",
        caption_justify="left",
    )
    table.add_column("implementation", no_wrap=True)
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
    ("wall s", "wall_s", "{:.3g}"),
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


def _metric_table(
    result: TrainingResult, title: str, caption: str, columns: tuple[tuple[str, str, str], ...]
) -> Table:
    """One row per normalisation, one column per metric, each with its % against torch LayerNorm."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("normalisation", no_wrap=True)
    for header, _, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for run in result.runs:
        table.add_row(NORM_LABELS.get(run.norm, run.norm), *_metric_cells(result, run.norm, columns))
    return table


def training_table(result: TrainingResult) -> Table:
    """Per normalisation: final quality, convergence and stability; % against torch LayerNorm."""
    corpus = result.corpus
    return _metric_table(
        result,
        f"Training quality: {_settings_text(result)}",
        f"data: {escape(corpus['source'])} ({corpus['files']} files, "
        f"{corpus['train_bytes']:,} train / {corpus['validation_bytes']:,} validation bytes). "
        "val loss: nats per byte, eval mode; perplexity per byte. (±x%): against torch LayerNorm. "
        "steps to 90%: first step where the smoothed training loss made 90% of its final improvement. "
        "loss std: training loss over the last steps, detrended.",
        QUALITY_COLUMNS,
    )


def training_cost_table(result: TrainingResult) -> Table:
    """Per normalisation: training speed and memory; % against torch LayerNorm."""
    return _metric_table(
        result,
        "Training cost",
        f"wall s: training steps only, evaluation excluded. peak: {result.peak_method}.",
        COST_COLUMNS,
    )


def activations_table(result: TrainingResult) -> Table:
    """Per normalisation: what it did to the activations of the trained model."""
    table = Table(
        title="Activations after training",
        title_justify="left",
        caption="mean, variance: of every norm layer's output on a validation batch (averaged over "
        "layers). |corr|: mean absolute correlation between hidden units, before → after the last "
        "block's first norm.",
        caption_justify="left",
    )
    table.add_column("normalisation", no_wrap=True)
    table.add_column("mean", justify="right", no_wrap=True)
    table.add_column("variance", justify="right", no_wrap=True)
    table.add_column("|corr| before → after", justify="right", no_wrap=True)
    for run in result.runs:
        table.add_row(
            NORM_LABELS.get(run.norm, run.norm),
            fmt_float(run.activation_mean),
            fmt_float(run.activation_var),
            f"{run.mean_abs_correlation_before:.2f} → {run.mean_abs_correlation_after:.2f}",
        )
    return table


def seeds_table(result: TrainingResult) -> Table:
    """Per normalisation: final validation loss over seeds, and its change against the baseline norm
    paired by seed (95% t-interval, Holm over the norms): the verdict one seed cannot give."""
    seeds = result.settings.seed_list
    baseline = NORM_LABELS.get(result.baseline, result.baseline)
    table = Table(
        title=f"Final validation loss over seeds {', '.join(map(str, seeds))} (nats per byte)",
        title_justify="left",
        caption=f"Δ: norm − {baseline}, paired by seed; 95% CI: t-interval over seeds; detectable: the "
        "smallest Δ these seeds find 80% of the time; real: t-test after Holm's adjustment over the norms "
        "(5%). One seed gives no interval.",
        caption_justify="left",
    )
    table.add_column("normalisation", no_wrap=True)
    for header in ("final loss", "Δ nats", "95% CI", "detectable", "real"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in result.seed_summary():
        label = NORM_LABELS.get(row["norm"], row["norm"])
        spread = f" ± {row['final_loss_std']:.4f}" if math.isfinite(row["final_loss_std"]) else ""
        loss = "diverged" if row["diverged"] else f"{row['final_loss_mean']:.4f}{spread}"
        if "delta_nats" not in row:
            table.add_row(label, loss, "baseline", "", "", "")
            continue
        low, high = row["ci95"]
        interval = f"[{low:+.4f}, {high:+.4f}]" if math.isfinite(low) else "—"
        detectable = f"{row['detectable_nats']:.4f}" if math.isfinite(row["detectable_nats"]) else "—"
        table.add_row(
            label,
            loss,
            f"{row['delta_nats']:+.4f}",
            interval,
            detectable,
            "yes" if row["significant"] else "no",
        )
    return table
