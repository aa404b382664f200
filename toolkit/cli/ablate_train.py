"""``toolkit ablate --train``: the base and each variant trained from scratch over seeds, then judged."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.output import Output
from toolkit.config import ModelConfig, load_config
from toolkit.errors import ConfigError, setting

TRAINING = "Training (with --train)"

Train = Annotated[
    bool,
    typer.Option(
        "--train",
        help="Train the base and each variant from scratch over seeds and compare held-out loss, steps "
        "and tokens/s (instead of changing a trained checkpoint).",
        rich_help_panel=TRAINING,
    ),
]
Steps = Annotated[
    int | None,
    typer.Option("--steps", min=1, help="Optimizer steps per run (default 300).", rich_help_panel=TRAINING),
]
Seeds = Annotated[
    int | None,
    typer.Option(
        "--seeds",
        min=2,
        help="Seeds 0..N-1, each trains every arm once (default 3).",
        rich_help_panel=TRAINING,
    ),
]
LearningRate = Annotated[
    float | None,
    typer.Option(
        "--lr", min=0.0, help="Peak learning rate of AdamW (default 2e-3).", rich_help_panel=TRAINING
    ),
]
TokensPerStep = Annotated[
    int | None,
    typer.Option(
        "--tokens-per-step",
        min=1,
        help="Training tokens per step (default 2048): --tokens-per-step / --seq-len windows (--seq-len: "
        "the training window, default 128).",
        rich_help_panel=TRAINING,
    ),
]
DModel = Annotated[
    int | None,
    typer.Option("--d-model", help="Trained model's width (default 128).", rich_help_panel=TRAINING),
]
Layers = Annotated[
    int | None, typer.Option("--layers", help="Trained model's blocks (default 2).", rich_help_panel=TRAINING)
]
Mlp = Annotated[
    int | None,
    typer.Option("--mlp", help="Trained model's MLP width d_mlp (default 512).", rich_help_panel=TRAINING),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="The trained base architecture: ModelConfig fields (JSON/TOML) or a Hugging Face config.json; "
        "the size flags and the tokenizer's vocabulary override it.",
        rich_help_panel=TRAINING,
    ),
]
DEFAULT_SEQ_LEN = 128
DEFAULT_STEPS = 300
DEFAULT_SEEDS = 3
DEFAULT_LR = 2e-3
DEFAULT_TOKENS_PER_STEP = 2048


def check_training_flags(train: bool, **flags: Any) -> None:
    """Training flags without --train, or checkpoint flags with it, are refused by name."""
    given = [name for name, value in flags.items() if value is not None]
    if not train and given:
        names = ", ".join(setting(name) for name in given)
        raise ConfigError(f"{names} set(s) up training; add {setting('train')}, or drop {names}")


def training_base(
    config_file: Path | None, vocab: int, seq_len: int, d_model: int | None, heads: int | None,
    layers: int | None, mlp: int | None,
) -> ModelConfig:  # fmt: skip
    """The base architecture to train: --config or the default small base, the size flags on top."""
    from toolkit.studies.settings import TRAINED_BASE

    base = load_config(config_file) if config_file is not None else TRAINED_BASE
    sizes = {"d_model": d_model, "n_heads": heads, "n_layers": layers, "d_mlp": mlp}
    fields: dict[str, Any] = {name: value for name, value in sizes.items() if value is not None}
    if d_model is not None and heads is None and d_model % base.n_heads:
        fields["n_heads"] = 1
    return base.replace(**fields, vocab_size=vocab, max_seq_len=seq_len, sliding_window=None)


def run_training_comparison(
    out: Output,
    variant_flags: dict[str, Any],
    *,
    classic: bool,
    config_file: Path | None,
    d_model: int | None,
    heads: int | None,
    layers: int | None,
    mlp: int | None,
    steps: int | None,
    seeds: int | None,
    lr: float | None,
    tokens_per_step: int | None,
    seq_len: int | None,
    device: str,
    text: Path | None,
    tokenizer: Path | None,
    text_encoding: str,
    plot: Path,
    no_plot: bool,
) -> None:
    """Train, compare, print; on rank 0 only under torchrun. ``classic``: no variant flag was given
    (the classic suite, less what does not apply to the base)."""
    from toolkit.device import resolve_device
    from toolkit.studies.ablation import left_out_of_classic, select_variants
    from toolkit.studies.ablation.training import init_distributed, rank_device, run_training_ablation
    from toolkit.training import Recipe
    from toolkit.training.data import training_text

    window = seq_len if seq_len is not None else DEFAULT_SEQ_LEN
    steps = steps if steps is not None else DEFAULT_STEPS
    seeds = seeds if seeds is not None else DEFAULT_SEEDS
    lr = lr if lr is not None else DEFAULT_LR
    tokens_per_step = tokens_per_step if tokens_per_step is not None else DEFAULT_TOKENS_PER_STEP
    if tokens_per_step < window:
        raise ConfigError(
            f"{setting('tokens_per_step')} ({tokens_per_step}) is less than one window of "
            f"{setting('seq_len')} {window}; give at least {window}"
        )
    recipe = Recipe(steps=steps, batch=tokens_per_step // window, seq_len=window, lr=lr,
                    eval_every=max(1, steps // 10))  # fmt: skip
    torch_device = rank_device(resolve_device(device))
    corpus = training_text(text, tokenizer, text_encoding)
    base = training_base(config_file, corpus.vocab_size, window, d_model, heads, layers, mlp)
    variants = select_variants(base, **variant_flags, train=True)
    if classic:
        dropped = left_out_of_classic(base)
        if dropped:
            out.note(f"left out of the classic suite, not applicable to this model: {', '.join(dropped)}")
    distributed = init_distributed(torch_device)
    with out.progress() as progress:
        result = run_training_ablation(
            base,
            variants,
            recipe,
            corpus.train,
            corpus.heldout,
            list(range(seeds)),
            device=torch_device,
            text=corpus.describe(),
            progress=progress,
        )
    if result is None:  # another rank than 0: rank 0 prints
        _leave(distributed)
        return
    from toolkit.tables.ablation_training import training_table, training_verdict, training_verdict_table

    if not no_plot:
        from toolkit.plots.ablation_training import save_training_plot

        out.save("plot", functools.partial(save_training_plot, result, plot))
    rows = [
        {
            "change": arm.name,
            "config_changes": arm.changes,
            "train": result.row_dict(index),
            "verdict": training_verdict(change, arm.diverged_seeds, recipe.steps),
        }
        for index, (arm, change) in enumerate(zip(result.variants, result.changes, strict=True))
    ]
    data = {
        "rows": rows,
        "train_base": result.base_dict(),
        "base_config": base.to_dict(),
        "recipe": recipe.to_dict(),
        "seeds": result.seeds,
        "device": result.device,
        "ranks": result.ranks,
        "text": result.text,
        "runs": result.curves(),
    }
    _leave(distributed)
    out.finish(data, training_table(result), training_verdict_table(result))


def _leave(distributed: bool) -> None:
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
