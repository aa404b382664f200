"""``toolkit layernorm-compare``: the custom LayerNorm against PyTorch's, and normalisations in training."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from toolkit.cli import options as opt
from toolkit.cli.app import app
from toolkit.cli.output import Output
from toolkit.errors import ConfigError
from toolkit.files import check_output_dir
from toolkit.plots import PLOTS_DIR
from toolkit.studies.settings import DEFAULT_SHAPES, TRAIN_NORMS, TrainingSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure
    from rich.console import RenderableType

    from toolkit.studies.layernorm import LayerNormReport

PARTS = "Parts"
SPEED = "Speed"
TRAINING = "Training (defaults: a small byte-level GPT)"
_DEFAULT = TrainingSettings()
_DEFAULT_SHAPES = ",".join(f"{m}x{n}" for m, n in DEFAULT_SHAPES)
_DEFAULT_NORMS = ",".join(TRAIN_NORMS)

Numerics = Annotated[
    bool, typer.Option("--numerics/--no-numerics", help="Errors against float64.", rich_help_panel=PARTS)
]
Speed = Annotated[
    bool, typer.Option("--speed/--no-speed", help="Time the shape grid.", rich_help_panel=PARTS)
]
Memory = Annotated[
    bool,
    typer.Option("--memory/--no-memory", help="Bytes saved for backward, peak.", rich_help_panel=PARTS),
]
Train = Annotated[
    bool,
    typer.Option("--train/--no-train", help="Train the small GPT with each norm.", rich_help_panel=PARTS),
]
Shapes = Annotated[
    str,
    typer.Option(
        "--shapes",
        help="Comma-separated M×N shapes (rows × row size) for speed, e.g. 4096x256,8192x4096.",
        rich_help_panel=SPEED,
    ),
]
AllBackends = Annotated[
    bool,
    typer.Option(
        "--all-backends",
        help="Also time the slow torch-ops reference backend (default: only the fast one for the device).",
        rich_help_panel=SPEED,
    ),
]
Steps = Annotated[
    int, typer.Option("--steps", min=1, help="Training steps per norm.", rich_help_panel=TRAINING)
]
TrainBatch = Annotated[
    int, typer.Option("--batch", min=1, help="Sequences per step.", rich_help_panel=TRAINING)
]
TrainSeqLen = Annotated[
    int, typer.Option("--seq-len", min=1, help="Bytes per training sequence.", rich_help_panel=TRAINING)
]
TrainDModel = Annotated[int, typer.Option("--d-model", min=1, help="Model width.", rich_help_panel=TRAINING)]
TrainHeads = Annotated[int, typer.Option("--heads", min=1, help="Attention heads.", rich_help_panel=TRAINING)]
TrainLayers = Annotated[
    int, typer.Option("--layers", min=1, help="Transformer blocks.", rich_help_panel=TRAINING)
]
TrainMlp = Annotated[int, typer.Option("--mlp", min=1, help="MLP hidden width.", rich_help_panel=TRAINING)]
Lr = Annotated[float, typer.Option("--lr", help="AdamW learning rate.", rich_help_panel=TRAINING)]
Seed = Annotated[
    int, typer.Option("--seed", help="First seed of weights and batches.", rich_help_panel=TRAINING)
]
Seeds = Annotated[
    int,
    typer.Option(
        "--seeds",
        min=1,
        help="Seeds --seed, --seed + 1, ...: each norm trained once per seed and judged against torch's "
        "LayerNorm over them (95% t-interval, Holm); curves and activations are the first seed's.",
        rich_help_panel=TRAINING,
    ),
]
Norms = Annotated[
    str,
    typer.Option(
        "--norms", help=f"Comma-separated, from {', '.join(TRAIN_NORMS)}.", rich_help_panel=TRAINING
    ),
]
Data = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Train on this text file's bytes, the last 10% for validation (default: the running Python's "
        "standard-library source files).",
        rich_help_panel=TRAINING,
    ),
]
Dtype = Annotated[
    opt.DtypeName,
    typer.Option(
        "--dtype",
        help="dtype of the speed and memory inputs (numerics always checks float32 and bfloat16; "
        "training runs in float32).",
    ),
]
PlotsDir = Annotated[Path, typer.Option("--plots-dir", help="Directory for the PNG plots.")]
NormName = Literal["layer", "rms"]  # toolkit.studies.layernorm.NORM_KINDS
Norm = Annotated[
    NormName,
    typer.Option(
        "--norm",
        help="The norm whose numerics, speed and memory are studied: layer (the custom LayerNorm against "
        "torch.nn.LayerNorm) or rms (the custom RMSNorm against torch.nn.RMSNorm, torch's LayerNorm timed "
        "beside it). Training compares the --norms either way.",
    ),
]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'4096x256,8192x4096' -> [(4096, 256), (8192, 4096)]."""
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().replace("×", "x").split("x")
        try:
            M, N = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"--shapes item {item.strip()!r} is not ROWSxSIZE, e.g. 4096x256") from None
        if M < 1 or N < 1:
            raise ConfigError(f"--shapes item {item.strip()!r} must have positive sizes")
        shapes.append((M, N))
    return shapes


@app.command(
    "layernorm-compare",
    short_help="Custom LayerNorm (or RMSNorm) vs torch's: numerics, speed, memory, training.",
    help="Does the custom LayerNorm (--norm rms: RMSNorm) match torch's (float64-checked numerics), and "
    "what does it cost in time, bandwidth and memory? Then train a small GPT with torch/custom LayerNorm, "
    "RMSNorm, BatchNorm and no norm, and plot what normalisation does.",
)
def layernorm_compare_command(
    norm: Norm = "layer",
    numerics: Numerics = True,
    speed: Speed = True,
    memory: Memory = True,
    train: Train = True,
    device: opt.Device = "auto",
    dtype: Dtype = "float32",
    shapes: Shapes = _DEFAULT_SHAPES,
    budget: opt.Budget = 4.0,
    all_backends: AllBackends = False,
    steps: Steps = _DEFAULT.steps,
    batch: TrainBatch = _DEFAULT.batch,
    seq_len: TrainSeqLen = _DEFAULT.model.max_seq_len,
    d_model: TrainDModel = _DEFAULT.model.d_model,
    heads: TrainHeads = _DEFAULT.model.n_heads,
    layers: TrainLayers = _DEFAULT.model.n_layers,
    mlp: TrainMlp = _DEFAULT.model.d_mlp,
    lr: Lr = _DEFAULT.lr,
    seed: Seed = _DEFAULT.seed,
    seeds: Seeds = _DEFAULT.seeds,
    norms: Norms = _DEFAULT_NORMS,
    data: Data = None,
    plots_dir: PlotsDir = PLOTS_DIR,
    no_plot: opt.NoPlot = False,
    json: opt.Json = False,
) -> None:
    if not (numerics or speed or memory or train):
        raise ConfigError(
            "every part is off, so there is nothing to measure; drop one of --no-numerics, --no-speed, "
            "--no-memory, --no-train"
        )
    import torch

    from toolkit.device import half_on_cpu_notes, resolve_device, resolve_dtype
    from toolkit.layernorm import available_backends
    from toolkit.plots.layernorm import layernorm_figures
    from toolkit.studies.layernorm import run_layernorm_study, stdlib_corpus, text_corpus
    from toolkit.tables.timing import cautions_text

    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    grid = parse_shapes(shapes)
    if not no_plot and (speed or train):
        check_output_dir(plots_dir, "plots_dir")
    model = _DEFAULT.model.replace(
        max_seq_len=seq_len, d_model=d_model, n_heads=heads, n_layers=layers, d_mlp=mlp
    )
    settings = TrainingSettings(
        model=model,
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
        seeds=seeds,
        eval_every=max(1, steps // 6),
        norms=tuple(n.strip() for n in norms.split(",") if n.strip()),
    )
    corpus = None
    if train:
        corpus = text_corpus(data) if data is not None else stdlib_corpus()
    speed_backends = available_backends(torch_device) if all_backends else None
    out = Output(json)
    with out.progress() as progress:
        report = run_layernorm_study(
            torch_device,
            torch_dtype,
            numerics=numerics,
            speed=speed,
            memory=memory,
            train=train,
            shapes=grid,
            speed_backends=speed_backends,
            budget_s=budget,
            settings=settings,
            corpus=corpus,
            progress=progress,
            norm=norm,
        )
    plots: list[Path] = []
    for name, build in [] if no_plot else layernorm_figures(report):
        written = out.save("plot", functools.partial(_save_plot, build, plots_dir / name))
        plots += [written] if written is not None else []
    if report.speed is not None:
        out.warn_all(half_on_cpu_notes(torch_device, torch_dtype))
        out.warn_all(cautions_text(report.speed.cautions, torch.get_num_threads()), shown=3)
    out.finish({**report.to_dict(), "plots": [str(p) for p in plots]}, *_renderables(report))


def _save_plot(build: Callable[[], Figure], path: Path) -> Path:
    from toolkit.plots.figure import save_figure

    return save_figure(build(), path)


def _renderables(report: LayerNormReport) -> list[RenderableType]:
    from toolkit.tables.layernorm import (
        activations_table,
        memory_table,
        numerics_tables,
        seeds_table,
        speed_tables,
        training_cost_table,
        training_table,
    )

    out: list[RenderableType] = []
    if report.numerics is not None:
        out += [*numerics_tables(report.numerics), ""]
    if report.speed is not None:
        out += [*speed_tables(report.speed), ""]
    if report.memory is not None:
        out += [memory_table(report.memory), ""]
    if report.training is not None:
        training = report.training
        out += [training_table(training), "", seeds_table(training), "", training_cost_table(training), ""]
        out.append(activations_table(training))
    return out
