"""``toolkit latency``: what affects the forward pass's latency, and how (one-parameter sweeps)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import RenderableType

from toolkit.cli import options as opt
from toolkit.cli.app import app
from toolkit.cli.output import Output
from toolkit.errors import InsufficientMemoryError, OutputError, SweepError
from toolkit.files import PLOT_SUFFIXES, atomic_path, check_output_dir, check_output_file
from toolkit.plots import PLOTS_DIR
from toolkit.studies.settings import DEFAULT_VALUES

if TYPE_CHECKING:
    import pandas as pd

SWEEP = "Sweep"
TIMING = "Timing"

_DEFAULTS_HELP = (
    "; ".join(
        f"{k}: {','.join(map(str, v))}{' (those up to max-seq-len)' if k == 'seq-len' else ''}"
        for k, v in DEFAULT_VALUES.items()
    )
    + "; kv-heads: the divisors of heads"
)

VaryName = Literal["seq-len", "vocab", "d-model", "heads", "layers", "mlp", "batch", "kv-heads", "all"]
Vary = Annotated[
    VaryName,
    typer.Option(
        "--vary",
        metavar="<param>",
        help="The parameter to sweep: seq-len, vocab, d-model, heads, kv-heads (grouped-query attention), "
        "layers, mlp or batch; "
        "all: every sweep but kv-heads with its defaults, and a summary.",
        rich_help_panel=SWEEP,
    ),
]

Values = Annotated[
    str | None,
    typer.Option(
        "--values",
        help=f"Comma-separated values to sweep, e.g. 1,2,4,8. Defaults: {_DEFAULTS_HELP}.",
        rich_help_panel=SWEEP,
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for torch (default: torch's choice, all cores).",
        rich_help_panel=TIMING,
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model first (CUDA: mode=reduce-overhead, CUDA graphs); compile time is "
        "reported apart from latency.",
        rich_help_panel=TIMING,
    ),
]
TargetCi = Annotated[
    float,
    typer.Option(
        "--target-ci",
        min=0.1,
        max=50.0,
        help="Stop timing a value once its median's 95% CI is within ± this many percent.",
        rich_help_panel=TIMING,
    ),
]
Csv = Annotated[
    Path | None, typer.Option("--csv", help="Also write the rows and the context to this CSV file.")
]
PlotPath = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        help="Plot file (PNG; default plots/latency_VARY.png); with --vary all, a directory "
        "(default plots/).",
    ),
]


def _plot_path(swept: str, plot: Path | None, every_sweep: bool) -> Path:
    """Where one sweep's plot goes: --plot itself, or with --vary all a file inside --plot."""
    if every_sweep:
        return (plot or PLOTS_DIR) / f"latency_{swept}.png"
    return plot or PLOTS_DIR / f"latency_{swept}.png"


def _check_outputs(vary: str, plot: Path | None, no_plot: bool, csv: Path | None) -> None:
    """Refuse an output path that could not be written before any timing starts."""
    if not no_plot:
        if vary == "all":
            if plot is not None and plot.suffix.lower() in PLOT_SUFFIXES:
                raise OutputError(
                    f"--plot {plot}: with --vary all, --plot is the directory for one plot per sweep; "
                    "give a directory"
                )
            check_output_dir(plot or PLOTS_DIR, "plot")
        else:
            check_output_file(_plot_path(vary, plot, False), "plot", PLOT_SUFFIXES)
    if csv is not None:
        check_output_file(csv, "csv")


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def parse_values(text: str) -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8]; positive integers only, at least two, no repeats."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SweepError(f"--values must be comma-separated integers such as 1,2,4,8, got {text!r}") from None
    if len(values) < 2:
        raise SweepError(f"--values needs at least two values to show a trend, got {text!r}")
    if min(values) < 1:
        raise SweepError(f"--values must all be at least 1, got {text!r}")
    if len(set(values)) != len(values):
        raise SweepError(f"--values has repeats: {text!r}")
    return sorted(values)


@app.command(
    "latency",
    short_help="Forward latency sweeps (--vary heads, seq-len, ...) with CIs and plots.",
    help="What affects forward latency, and how: sweep one parameter (or all), time each value with a "
    "CI, fit the trend, plot it.",
)
def latency_command(
    vary: Vary = "heads",
    values: Values = None,
    config_file: opt.ConfigFile = None,
    weights: opt.ModelWeights = None,
    checkpoint_format: opt.Format = "auto",
    vocab: opt.Vocab = None,
    max_seq_len: opt.MaxSeqLen = None,
    d_model: opt.DModel = None,
    heads: opt.Heads = None,
    layers: opt.Layers = None,
    mlp: opt.Mlp = None,
    eps: opt.Eps = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "float32",
    seq_len: opt.SeqLen = None,
    batch: opt.Batch = 1,
    threads: Threads = None,
    compile: Compile = False,
    budget: opt.Budget = 8.0,
    target_ci: TargetCi = 2.0,
    json: opt.Json = False,
    csv: Csv = None,
    plot: PlotPath = None,
    no_plot: opt.NoPlot = False,
) -> None:
    import torch

    from toolkit.device import half_on_cpu_notes, resolve_device, resolve_dtype
    from toolkit.plots.latency import save_latency_plot
    from toolkit.studies.latency import LatencyReport, measure_latency_all, measure_latency_sweep
    from toolkit.studies.settings import ForwardTiming
    from toolkit.tables.latency import context_text, latency_table, summary_table, sweep_notes, trend_text

    config = opt.model_config(
        config_file, vocab, max_seq_len, d_model, heads, layers, mlp, eps, weights, checkpoint_format
    )
    if vary == "all" and values is not None:
        raise SweepError(
            "--values cannot be used with --vary all (each sweep uses its defaults); pick one --vary"
        )
    swept = parse_values(values) if values is not None else None
    _check_outputs(vary, plot, no_plot, csv)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    if threads is not None:
        torch.set_num_threads(threads)
    timing = ForwardTiming(
        device=torch_device,
        dtype=torch_dtype,
        batch=batch,
        seq_len=seq_len,
        budget_s=budget,
        target_rel_ci=target_ci / 100.0,
        compile=compile,
    )
    measure = (
        functools.partial(measure_latency_all, config, timing)
        if vary == "all"
        else functools.partial(measure_latency_sweep, vary, config, timing, values=swept)
    )
    out = Output(json)
    with out.progress() as progress:
        outcome = measure(progress=progress)
    report: LatencyReport | None
    if isinstance(outcome, LatencyReport):  # --vary all
        report, sweeps = outcome, outcome.sweeps
    else:
        report, sweeps = None, [outcome]
    plot_paths: list[Path] = []
    if not no_plot:
        for sweep in sweeps:
            target = _plot_path(sweep.vary, plot, vary == "all")
            written = out.save("plot", functools.partial(save_latency_plot, sweep, target))
            plot_paths += [written] if written is not None else []
    if csv is not None:
        out.save("rows", functools.partial(_write_csv, outcome.to_frame(), csv))
    out.warn_all(half_on_cpu_notes(torch_device, torch_dtype))
    for sweep in sweeps:
        out.warn_all(sweep_notes(sweep, torch.get_num_threads()))
    renderables: list[RenderableType] = []
    for sweep in sweeps:
        renderables += [latency_table(sweep), trend_text(sweep), context_text(sweep), ""]
    if report is not None:
        renderables.append(summary_table(report))
    out.finish({**outcome.to_dict(), "plots": [str(p) for p in plot_paths]}, *renderables)
    short = next((sweep.vary for sweep in sweeps if sweep.stop_reason == "out_of_memory"), None)
    if short is not None:  # the rows above are what was measured before the allocation failed
        raise InsufficientMemoryError(
            f"ran out of memory while timing the {short} sweep; the rows above were measured before it. "
            "Lower --seq-len, --batch or the model's size, or close other programs"
        )
