"""Options shared by several commands, declared once (``Annotated`` aliases), and the config builder.

Every model command takes the model flags below; ``None`` means "keep the value from --config, or
the reference default".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from toolkit.config import ModelConfig, from_dict, load_config
from toolkit.errors import ConfigError

MODEL = "Model (defaults: the reference model of docs/reference.md)"
CHECKPOINT = "Checkpoint"

Vocab = Annotated[
    int | None, typer.Option("--vocab", help="Vocabulary size (default 512).", rich_help_panel=MODEL)
]
MaxSeqLen = Annotated[
    int | None,
    typer.Option("--max-seq-len", help="Longest sequence (positions) (default 1024).", rich_help_panel=MODEL),
]
DModel = Annotated[
    int | None, typer.Option("--d-model", help="Model width d (default 256).", rich_help_panel=MODEL)
]
Heads = Annotated[
    int | None,
    typer.Option("--heads", help="Attention heads; must divide d-model (default 2).", rich_help_panel=MODEL),
]
Layers = Annotated[
    int | None, typer.Option("--layers", help="Transformer blocks (default 3).", rich_help_panel=MODEL)
]
Mlp = Annotated[
    int | None, typer.Option("--mlp", help="MLP hidden width d_mlp (default 1280).", rich_help_panel=MODEL)
]
Eps = Annotated[
    float | None,
    typer.Option("--eps", help="Norm eps, LayerNorm or RMSNorm (default 1e-5).", rich_help_panel=MODEL),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="JSON or TOML file of ModelConfig fields, or a Hugging Face config.json (GPT-2, Llama, Mistral, "
        "Qwen2, Qwen3, GPT-NeoX: no weights needed); flags override it.",
        rich_help_panel=MODEL,
    ),
]
DeviceName = Literal["auto", "cpu", "cuda"]  # what toolkit.device accepts (a test checks)
DtypeName = Literal["float32", "bfloat16", "float16"]
Device = Annotated[DeviceName, typer.Option("--device", help="auto = CUDA when a GPU is visible, else CPU.")]
Dtype = Annotated[DtypeName, typer.Option("--dtype", help="Floating-point type of weights and activations.")]
SeqLen = Annotated[
    int | None, typer.Option("--seq-len", min=1, help="Sequence length of the input (default max-seq-len).")
]
Batch = Annotated[int, typer.Option("--batch", min=1, help="Batch size of the input.")]
ModelWeights = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Take the model's config from this checkpoint (a Hugging Face directory: GPT-2, Llama, "
        "Mistral, Qwen2, Qwen3 or GPT-NeoX; a nanoGPT "
        "ckpt.pt, the supplied format or a toolkit export, as load-weights reads them); the size flags "
        "and --config cannot be combined with it.",
        rich_help_panel=MODEL,
    ),
]
FormatName = Literal["auto", "hf", "hf-gpt2", "nanogpt", "supplied", "toolkit"]  # toolkit.weights.FORMATS
Format = Annotated[
    FormatName,
    typer.Option(
        "--format",
        help="Checkpoint format of --weights; auto tells it from the content: a Hugging Face directory "
        "of a Llama, Mistral, Qwen2, Qwen3 or GPT-NeoX model (hf), a Hugging Face GPT-2 directory or state "
        "dict, a nanoGPT ckpt.pt, the supplied format, or a toolkit export.",
        rich_help_panel=CHECKPOINT,
    ),
]
NoPlot = Annotated[bool, typer.Option("--no-plot", help="Do not write plots.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object instead of tables.")]

TIMING = "Timing"
Budget = Annotated[
    float,
    typer.Option(
        "--budget",
        min=0.01,
        help="Seconds of timing, at most: per swept value (latency), per shape and pass "
        "(layernorm-compare), for the whole interleaved run (ablate). At least 10 rounds are timed.",
        rich_help_panel=TIMING,
    ),
]

# Reading checkpoints (load-weights, ablate)
Weights = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Checkpoint: a Hugging Face directory (save_pretrained) of GPT-2, Llama, Mistral, Qwen2, Qwen3 "
        "or GPT-NeoX, a nanoGPT ckpt.pt, a file in the "
        "supplied format (.safetensors, .pt, .pth), or a toolkit export. "
        "Default: the shipped weights/reference_model.safetensors, looked up in ./weights, then in the "
        "source tree the package was installed from.",
        rich_help_panel=CHECKPOINT,
    ),
]
Examples = Annotated[
    Path | None,
    typer.Option(
        "--examples",
        help="Reference outputs: .safetensors with input_ids_<i> / logits_<i>, or a .pt list of "
        "{'input_ids': [S], 'logits': [S, V]}. Default: the shipped examples when --weights is not given.",
        rich_help_panel=CHECKPOINT,
    ),
]
Mapping = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        help="JSON key mapping: foreign key -> toolkit parameter, and the transform (see "
        "weights/keys_mapping.json). Default: the built-in mapping of the supplied format.",
        rich_help_panel=CHECKPOINT,
    ),
]
HeadsSearch = Annotated[
    int | None,
    typer.Option(
        "--heads",
        min=1,
        help="Attention heads (in no tensor shape). Default: a toolkit export's own; else every divisor "
        "of d_model is tried against the examples; else 2.",
        rich_help_panel=CHECKPOINT,
    ),
]
Atol = Annotated[
    float,
    typer.Option(
        "--atol",
        min=0.0,
        help="Largest |logit difference| that still counts as reproduced (float32).",
        rich_help_panel=CHECKPOINT,
    ),
]

# Scoring real text (load-weights, ablate)
TEXT = "Text (next-token loss)"
Text = Annotated[
    Path | None,
    typer.Option(
        "--text",
        help="Score the model's next-token loss on this text file. Default: the shipped held-out text "
        "(weights/heldout.txt) when the checkpoint has a known tokenizer.",
        rich_help_panel=TEXT,
    ),
]
Tokenizer = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer",
        help="A tokenizer.json, or a directory holding one or GPT-2's vocab.json + merges.txt. Default: "
        "the one in the checkpoint's directory (weights/tokenizer.json for the shipped model).",
        rich_help_panel=TEXT,
    ),
]
TextEncoding = Annotated[
    str,
    typer.Option("--text-encoding", help="Encoding of --text (a Python codec name).", rich_help_panel=TEXT),
]
TextWindow = Annotated[
    int | None,
    typer.Option(
        "--text-window",
        min=1,
        help="Tokens per evaluation window (default 256, or max-seq-len if smaller); the text is cut "
        "into non-overlapping windows, the unit of the bootstrap.",
        rich_help_panel=TEXT,
    ),
]

FLAGS = {
    "backend": "--backend",
    "batch": "--batch",
    "budget_s": "--budget",
    "compile": "--compile",
    "config": "--config",
    "csv": "--csv",
    "d_mlp": "--mlp",
    "d_model": "--d-model",
    "data": "--data",
    "device": "--device",
    "dtype": "--dtype",
    "examples": "--examples",
    "export": "--export",
    "ffn": "--ffn",
    "format": "--format",
    "gelu": "--gelu",
    "kernel": "--kernel",
    "kv_heads": "--kv-heads",
    "lr": "--lr",
    "mapping": "--mapping",
    "max_seq_len": "--max-seq-len",
    "n_heads": "--heads",
    "n_layers": "--layers",
    "norm": "--norm",
    "plot": "--plot",
    "position": "--position",
    "plots_dir": "--plots-dir",
    "repeat": "--repeat",
    "residual": "--residual",
    "rope_theta": "--rope-theta",
    "seeds": "--seeds",
    "seq_len": "--seq-len",
    "steps": "--steps",
    "text": "--text",
    "text_encoding": "--text-encoding",
    "text_window": "--text-window",
    "tokenizer": "--tokenizer",
    "tokens_per_step": "--tokens-per-step",
    "train": "--train",
    "threads": "--threads",
    "values": "--values",
    "vocab_size": "--vocab",
    "vary": "--vary",
    "weights": "--weights",
    "workers": "--workers",
}
"""The flag of each quantity that library messages name (``toolkit.errors.setting``)."""


def model_config(
    config_file: Path | None = None,
    vocab: int | None = None,
    max_seq_len: int | None = None,
    d_model: int | None = None,
    heads: int | None = None,
    layers: int | None = None,
    mlp: int | None = None,
    eps: float | None = None,
    weights: Path | None = None,
    checkpoint_format: str = "auto",
) -> ModelConfig:
    """The config from --weights, or from --config (or the defaults) with every given flag on top."""
    if weights is not None:
        return _config_of_checkpoint(
            weights, config_file, vocab, max_seq_len, d_model, layers, mlp, heads, eps, checkpoint_format
        )
    if checkpoint_format != "auto":
        raise ConfigError("--format describes --weights; give --weights too, or drop --format")
    base = load_config(config_file) if config_file is not None else ModelConfig()
    flags = {
        "vocab_size": vocab,
        "max_seq_len": max_seq_len,
        "d_model": d_model,
        "n_heads": heads,
        "n_layers": layers,
        "d_mlp": mlp,
        "norm_eps": eps,
    }
    return from_dict({**base.to_dict(), **{k: v for k, v in flags.items() if v is not None}})


def _config_of_checkpoint(
    weights: Path,
    config_file: Path | None,
    vocab: int | None,
    max_seq_len: int | None,
    d_model: int | None,
    layers: int | None,
    mlp: int | None,
    heads: int | None,
    eps: float | None,
    checkpoint_format: str,
) -> ModelConfig:
    """A checkpoint's config (its sizes fixed by its tensors); --heads and --eps may still be given."""
    sizes = {
        "--config": config_file,
        "--vocab": vocab,
        "--max-seq-len": max_seq_len,
        "--d-model": d_model,
        "--layers": layers,
        "--mlp": mlp,
    }
    given = [flag for flag, value in sizes.items() if value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot be combined with --weights, whose tensors fix the model's sizes; "
            "drop one or the other"
        )
    from toolkit.weights import read_config  # reads and checks the checkpoint; builds no model

    config = read_config(weights, checkpoint_format, n_heads=heads)
    return config if eps is None else config.replace(norm_eps=eps)
