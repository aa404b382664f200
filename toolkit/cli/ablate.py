"""``toolkit ablate``: what each architecture change does to a checkpoint's logits and latency."""

from __future__ import annotations

import functools
import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from toolkit.cli import ablate_train as tr
from toolkit.cli import options as opt
from toolkit.cli.app import app
from toolkit.cli.output import Output
from toolkit.config import ModelConfig
from toolkit.errors import ConfigError, DataError, InsufficientMemoryError, WeightsError, setting
from toolkit.files import PLOT_SUFFIXES, check_output_file
from toolkit.plots import ABLATION_PLOT, ABLATION_TRAINING_PLOT
from toolkit.signals import exit_code, exit_now, stop_requested

if TYPE_CHECKING:
    import torch

VARIANTS = "Variants (none given: the classic suite)"

GeluName = Literal["none", "tanh"]  # GELU_VARIANTS (a test checks)
NormName = Literal["torch", "custom", "rms", "none", "batch", "rms-torch"]  # NORM_VARIANTS (a test checks)
PositionName = Literal["learned", "rope"]  # POSITION_VARIANTS
FfnName = Literal["gelu", "swiglu"]  # MLP_VARIANTS


class ResidualName(StrEnum):
    """RESIDUAL_VARIANTS as a Typer choice (a repeatable option cannot be a Literal)."""

    standard = "standard"
    input_skip = "input-skip"
    no_mlp_skip = "no-mlp-skip"
    parallel = "parallel"


TIMING = "Latency"

VariantEps = Annotated[
    float | None,
    typer.Option(
        "--eps",
        help="Variant: the norms' eps, LayerNorm or RMSNorm (the classic study uses 1e-4).",
        rich_help_panel=VARIANTS,
    ),
]
NoScale = Annotated[
    bool,
    typer.Option(
        "--no-scale",
        help="Variant: attention logits not divided by sqrt(head_dim).",
        rich_help_panel=VARIANTS,
    ),
]
Gelu = Annotated[
    GeluName | None,
    typer.Option(
        "--gelu",
        help="Variant: GELU form (none: exact erf; tanh: the approximation).",
        rich_help_panel=VARIANTS,
    ),
]
Residual = Annotated[
    list[ResidualName] | None,
    typer.Option(
        "--residual",
        metavar="<wiring>",
        help="Variant: residual wiring, one of input-skip, no-mlp-skip, parallel (standard: unchanged); "
        "repeatable. See docs/reference.md.",
        rich_help_panel=VARIANTS,
    ),
]
Norm = Annotated[
    NormName | None,
    typer.Option(
        "--norm",
        metavar="<norm>",
        help="Variant: norm implementation, one of torch, custom, rms, none, batch, rms-torch; only one "
        "with the checkpoint's norm parameters can share its weights (custom, for a LayerNorm checkpoint; "
        "rms-torch, PyTorch's RMSNorm, for an RMSNorm one).",
        rich_help_panel=VARIANTS,
    ),
]
RopeTheta = Annotated[
    float | None,
    typer.Option(
        "--rope-theta",
        help="Variant: RoPE base theta (models with rotary positions: Llama, Qwen, Mistral, Pythia).",
        rich_help_panel=VARIANTS,
    ),
]
Position = Annotated[
    PositionName | None,
    typer.Option(
        "--position",
        help="Variant (with --train): position encoding, learned table or rope (rotary on q and k).",
        rich_help_panel=VARIANTS,
    ),
]
Ffn = Annotated[
    FfnName | None,
    typer.Option(
        "--ffn",
        help="Variant (with --train): MLP form; swiglu, the gated SiLU MLP at 2/3 the width (the same "
        "parameter count).",
        rich_help_panel=VARIANTS,
    ),
]
KvHeads = Annotated[
    int | None,
    typer.Option(
        "--kv-heads",
        min=1,
        help="Variant (with --train): key/value heads (grouped-query attention); must divide the heads.",
        rich_help_panel=VARIANTS,
    ),
]
Latency = Annotated[
    bool,
    typer.Option(
        "--latency/--no-latency",
        help="Time the variants (--no-latency: outputs only).",
        rich_help_panel=TIMING,
    ),
]
TextLoss = Annotated[
    bool,
    typer.Option(
        "--text-loss/--no-text-loss",
        help="Score each variant's next-token loss on text (--no-text-loss: skip it).",
        rich_help_panel=opt.TEXT,
    ),
]
PlotPath = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        help=f"Where to write the plot (PNG): the output-vs-latency plot (default {ABLATION_PLOT}); with "
        f"--train, the training curves (default {ABLATION_TRAINING_PLOT}).",
    ),
]
RANDOM_LENGTHS = (1, 64)
RANDOM_LONGEST = 1024
ABLATION_TARGET_REL_CI = 0.01  # the variants differ by a few percent: time to ±1%


@app.command(
    "ablate",
    short_help="Output and latency change of architecture variants on a checkpoint.",
    help="What each architecture change (eps, attention scaling, GELU, residual wiring, norm) does to a "
    "checkpoint's logits and to its latency, with the same weights; with --train, what it does to "
    "training: the base and each variant trained from scratch over seeds.",
)
def ablate_command(
    weights: opt.Weights = None,
    checkpoint_format: opt.Format = "auto",
    examples: opt.Examples = None,
    mapping: opt.Mapping = None,
    heads: opt.HeadsSearch = None,
    atol: opt.Atol = 1e-4,
    eps: VariantEps = None,
    no_scale: NoScale = False,
    gelu: Gelu = None,
    residual: Residual = None,
    norm: Norm = None,
    rope_theta: RopeTheta = None,
    position: Position = None,
    ffn: Ffn = None,
    kv_heads: KvHeads = None,
    train: tr.Train = False,
    steps: tr.Steps = None,
    seeds: tr.Seeds = None,
    lr: tr.LearningRate = None,
    tokens_per_step: tr.TokensPerStep = None,
    d_model: tr.DModel = None,
    layers: tr.Layers = None,
    mlp: tr.Mlp = None,
    config_file: tr.ConfigFile = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "float32",
    seq_len: opt.SeqLen = None,
    batch: opt.Batch = 1,
    budget: opt.Budget = 60.0,
    latency: Latency = True,
    text: opt.Text = None,
    tokenizer: opt.Tokenizer = None,
    text_encoding: opt.TextEncoding = "utf-8",
    text_window: opt.TextWindow = None,
    text_loss: TextLoss = True,
    plot: PlotPath = None,
    no_plot: opt.NoPlot = False,
    json: opt.Json = False,
) -> None:
    tr.check_training_flags(
        train, steps=steps, seeds=seeds, lr=lr, tokens_per_step=tokens_per_step, d_model=d_model,
        n_layers=layers, d_mlp=mlp, config=config_file,
    )  # fmt: skip
    variant_flags: dict[str, Any] = {
        "eps": eps,
        "no_scale": no_scale,
        "gelu": gelu,
        "residuals": [r.value for r in residual or ()],
        "norm": norm,
        "rope_theta": rope_theta,
        "positions": position,
        "ffn": ffn,
        "kv_heads": kv_heads,
    }
    classic = not _variant_flags(*variant_flags.values())  # no variant flag: the classic suite
    if train:
        unused = {  # the checkpoint ablation's own flags: refused, not ignored
            "--weights": weights is not None,
            "--examples": examples is not None,
            "--mapping": mapping is not None,
            "--dtype": dtype != "float32",
            "--batch (give --tokens-per-step)": batch != 1,
            "--budget": budget != 60.0,
            "--no-latency": not latency,
            "--text-window (the training window is --seq-len)": text_window is not None,
            "--no-text-loss": not text_loss,
            "--format": checkpoint_format != "auto",
        }
        ignored = [flag for flag, given in unused.items() if given]
        if ignored:
            raise ConfigError(
                f"{', '.join(ignored)} set(s) up the checkpoint ablation and would do nothing with --train, "
                "which trains from scratch in float32 without latency timing; drop them, and give the "
                f"architecture with {setting('config')} (any config.json works) and the size flags"
            )
        plot = plot if plot is not None else ABLATION_TRAINING_PLOT
        if not no_plot:
            check_output_file(plot, "plot", PLOT_SUFFIXES)
        tr.run_training_comparison(
            Output(json), variant_flags, classic=classic, config_file=config_file, d_model=d_model,
            heads=heads, layers=layers, mlp=mlp, steps=steps, seeds=seeds, lr=lr,
            tokens_per_step=tokens_per_step, seq_len=seq_len, device=device, text=text, tokenizer=tokenizer,
            text_encoding=text_encoding, plot=plot, no_plot=no_plot,
        )  # fmt: skip
        return
    new_weights = {"position": position, "ffn": ffn, "kv_heads": kv_heads}
    if any(value is not None for value in new_weights.values()):
        names = ", ".join(setting(name) for name, value in new_weights.items() if value is not None)
        raise ConfigError(
            f"{names} change(s) the weights themselves, so no trained checkpoint can show what they do; add "
            f"{setting('train')} to train base and variant from scratch and compare them"
        )
    plot = plot if plot is not None else ABLATION_PLOT
    import torch

    from toolkit.device import half_on_cpu_notes, resolve_device, resolve_dtype
    from toolkit.memory import check_fits
    from toolkit.plots.ablation import save_ablation_plot
    from toolkit.studies.ablation import left_out_of_classic, run_ablation, select_variants
    from toolkit.studies.settings import ForwardTiming
    from toolkit.tables.ablation import (
        latency_notes,
        latency_table,
        output_table,
        prediction_table,
        text_loss_table,
        verdict_table,
        verdict_text,
    )
    from toolkit.text.evaluation import prepare_text
    from toolkit.weights import load_checkpoint, read_examples, shipped_files

    torch_device = resolve_device(device)
    timing = (
        ForwardTiming(
            device=torch_device,
            dtype=resolve_dtype(dtype),
            batch=batch,
            seq_len=seq_len,
            budget_s=budget,
            target_rel_ci=ABLATION_TARGET_REL_CI,
        )
        if latency
        else None
    )
    if not text_loss and (text is not None or tokenizer is not None):
        raise DataError("--text and --tokenizer choose the text --no-text-loss skips; drop one or the other")
    if not no_plot:
        check_output_file(plot, "plot", PLOT_SUFFIXES)
    if weights is None:
        weights, shipped_examples = shipped_files()
        examples = shipped_examples if examples is None else examples
    out = Output(json)
    with out.progress() as progress:
        model, report = load_checkpoint(
            weights,
            examples=examples,
            mapping=mapping,
            n_heads=heads,
            atol=atol,
            progress=progress,
            checkpoint_format=checkpoint_format,
        )
        signum = stop_requested()
        if signum is not None:  # a search cut short proves nothing either way, and nothing is measured
            name = signal.Signals(signum).name
            exit_now(
                exit_code(signum), f"interrupted by {name} while loading the checkpoint; nothing measured"
            )
        if report.verified and not report.passed:
            raise WeightsError(
                f"{weights} does not reproduce its examples (max abs diff {report.max_abs_diff:.3g} > atol "
                f"{report.atol:g}); an ablation of a wrongly loaded model means nothing. Run 'toolkit "
                "load-weights' with the same options to see why"
            )
        model.config.sequence_length(seq_len)  # refused even with --no-latency: the input is invalid
        variants = select_variants(model.config, **variant_flags)
        if classic:
            dropped = left_out_of_classic(model.config)
            if dropped:
                out.note(f"left out of the classic suite, not applicable to this model: {', '.join(dropped)}")
        if timing is not None:  # the weights are in memory already: will the timed passes fit beside them?
            element_size = torch.empty((), dtype=timing.dtype).element_size()
            runs = [(model.config, timing.batch, timing.seq_len_for(model.config))]
            check_fits(runs, timing.device, element_size, weights_loaded=True)
        if examples is not None:
            inputs = [example.input_ids for example in read_examples(examples)]
        else:
            inputs = _random_inputs(model.config)
            lengths = ", ".join(str(len(ids)) for ids in inputs)
            out.note(f"no --examples given: output change measured on random token ids of lengths {lengths}")
        eval_text, no_text = (
            prepare_text(
                model.config,
                weights,
                text,
                tokenizer,
                text_encoding,
                text_window,
            )
            if text_loss
            else (None, None)
        )
        if no_text is not None:
            out.note(no_text)
        result = run_ablation(
            model,
            inputs,
            variants,
            timing,
            text=eval_text,
            text_device=torch_device,
            progress=progress,
        )
    if not no_plot:
        out.save("plot", functools.partial(save_ablation_plot, result, plot))
    if timing is not None:
        out.warn_all(half_on_cpu_notes(timing.device, timing.dtype))
    if result.latency is not None:
        out.warn_all(latency_notes(result.latency, torch.get_num_threads()))
    rows = [
        {**data, "verdict": verdict_text(row)}
        for data, row in zip(result.to_dict(), result.rows, strict=True)
    ]
    tables = [
        output_table(result),
        prediction_table(result),
        text_loss_table(result),
        latency_table(result),
        verdict_table(result),
    ]
    out.finish({"rows": rows, "text": result.text}, *(table for table in tables if table is not None))
    if result.latency is not None and result.latency.stop_reason == "out_of_memory":
        raise InsufficientMemoryError(
            "ran out of memory while timing the variants; the results above were measured before it. "
            "Lower --seq-len or --batch, or close other programs"
        )


def _variant_flags(*flags: object) -> bool:
    return any(flag not in (None, False, []) for flag in flags)


def _random_inputs(config: ModelConfig) -> list[torch.Tensor]:
    """Seeded random token ids of a few lengths (1, 64 and the longest the model takes, at most
    RANDOM_LONGEST: outputs are compared in float64)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    longest = min(config.longest_sequence, RANDOM_LONGEST)
    lengths = sorted({min(n, longest) for n in (*RANDOM_LENGTHS, longest)})
    return [torch.randint(0, config.vocab_size, (n,), generator=generator) for n in lengths]
