"""Train the shipped reference model on real text: the Python standard library's source.

Seeded and reproducible on one machine (same bytes for the same Python, seed and thread count):

1. The standard library's UTF-8 ``.py`` files are shuffled with the seed; the first ~256 KB are held
   out (``weights/heldout.txt``, with ``weights/HELDOUT-NOTICE.txt``: the files it came from and the
   PSF licence), the other modules are the training text.
2. A byte-level BPE with exactly ``vocab_size`` tokens is trained on the training text with Hugging
   Face ``tokenizers`` (``weights/tokenizer.json``).
3. The model (default: the toolkit's default config, 3,156,992 parameters) is trained on random
   windows of the training tokens with the toolkit's trainer: AdamW, linear warm-up then cosine decay,
   gradient clipping 1.0, the same tokens every step. The first 55% of the steps take windows as long
   as the evaluation's (256 tokens): cheap steps, and every position row of that range sees 16 windows
   a step. Then the context is extended (Longformer's initialisation): the position rows past 256 are
   filled with copies of the trained ones, so what attention learned about nearby positions holds
   everywhere, and every later step takes max_seq_len windows. The model then uses its whole context:
   its held-out loss in 1024-token windows is below that in 256-token windows. (Mixing a few long
   windows in from the start, the earlier recipe, left positions past 256 barely trained: 2.839 nats in
   1024-token windows against 2.315 in 256.)
4. The trained weights are copied into Hugging Face ``transformers``' GPT2LMHeadModel, which writes
   the checkpoint in the supplied format (``weights/reference_model.safetensors``) and computes, in
   float64, the logits of the reference examples (held-out token ids of lengths 1, 2, 16, 128 and
   max_seq_len; ``weights/reference_examples.safetensors``). The toolkit computes neither.
5. The held-out loss (nats/token) is compared with the held-out text's unigram entropy under the same
   tokenizer; quality bar: loss <= 0.6 x entropy. ``weights/reference_training.json`` records the run
   and ``plots/reference_training.png`` draws the loss curves.

    python scripts/train_reference.py                       # the shipped model (about 22 min, 2 cores)
    python scripts/train_reference.py --steps 20 --config tiny.json --out-dir /tmp/w --plots-dir /tmp/p
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from make_reference_weights import gpt2_config, to_supplied_format
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

from toolkit.config import ModelConfig, load_config
from toolkit.files import atomic_path
from toolkit.model import Transformer
from toolkit.text import (
    DEFAULT_WINDOW,
    HELDOUT_BYTES,
    HELDOUT_FILE,
    HELDOUT_NOTICE,
    TOKENIZER_FILE,
    score_text,
    split_stdlib,
    stdlib_root,
    token_windows,
    train_bpe,
    unigram_entropy,
)
from toolkit.training import Recipe
from toolkit.training.loop import Batches, train_run
from toolkit.weights import SHIPPED_EXAMPLES, SHIPPED_WEIGHTS, Example, write_examples

QUALITY_BAR = 0.6  # held-out loss at most this fraction of the unigram entropy
EXAMPLE_LENGTHS = (1, 2, 16, 128, 1024)
RECORD_FILE = "reference_training.json"
CURVE_FILE = "reference_training.png"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("weights"))
    parser.add_argument("--plots-dir", type=Path, default=Path("plots"))
    parser.add_argument(
        "--config", type=Path, default=None, help="Model config (.json/.toml); default: the default."
    )
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help=f"Training window (default: the evaluation window, {DEFAULT_WINDOW}, or max_seq_len if less).",
    )
    parser.add_argument(
        "--long-every",
        type=int,
        default=1,
        help="Once long windows start (--extend-at), every Nth step trains on max_seq_len windows (same "
        "tokens per step) so that every position is trained; 0: never.",
    )
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=float, default=0.05, help="Share of the steps spent warming up.")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--heldout-bytes", type=int, default=HELDOUT_BYTES)
    parser.add_argument("--max-train-bytes", type=int, default=None, help="Cap on the training text.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--extend-at",
        type=float,
        default=0.55,
        help="Share of the steps trained on short windows only; then the position table past them is "
        "filled with copies of the trained rows (Longformer's initialisation) and the long windows "
        "start (context extension). 0: long windows from the start.",
    )
    return parser.parse_args()


def train(
    model: Transformer, ids: torch.Tensor, heldout: torch.Tensor, args: argparse.Namespace, seq_len: int
) -> tuple[dict[str, list[Any]], Recipe]:
    """Train in place with the toolkit's one trainer (toolkit.training); the loss curves, with the
    held-out loss on a fixed probe of 8 windows every ``--eval-every`` steps."""
    max_len = model.config.max_seq_len
    recipe = Recipe(
        steps=args.steps,
        batch=args.batch,
        seq_len=seq_len,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        eval_every=args.eval_every,
        long_every=args.long_every if max_len > seq_len else 0,
        long_len=max_len,
        long_from=round(args.extend_at * args.steps),
    )
    batches = Batches(ids, recipe, args.seed)
    probe = token_windows(heldout, seq_len)[:8]  # a fixed held-out probe for the curve
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("training", total=args.steps)
        run = train_run(model, batches, recipe, probe, on_step=lambda done: bar.update(task, completed=done))
    model.eval()
    if not run.complete:
        raise SystemExit(f"training diverged at step {run.steps_done}; lower --lr")
    curve = {
        "step": list(range(run.steps_done)),
        "train_nats": run.train_losses,
        "tokens": [batches.shape(step)[0] * batches.shape(step)[1] for step in range(run.steps_done)],
        "eval_step": run.eval_steps,
        "heldout_nats": run.eval_losses,
    }
    return curve, recipe


@torch.no_grad()
def to_gpt2(model: Transformer) -> GPT2LMHeadModel:
    """GPT2LMHeadModel holding ``model``'s weights (Conv1D stores [in, out]: the transposed Linear)."""
    config = model.config
    hf = GPT2LMHeadModel(gpt2_config(config)).eval()
    gpt = hf.transformer
    gpt.wte.weight.copy_(model.token_embedding.weight)
    gpt.wpe.weight.copy_(model.position_embedding.weight)
    gpt.ln_f.weight.copy_(model.ln_final.weight)
    gpt.ln_f.bias.copy_(model.ln_final.bias)
    for block, ours in zip(gpt.h, model.blocks, strict=True):
        pairs = [
            (block.ln_1, ours.ln1, False),
            (block.attn.c_attn, ours.attn.qkv, True),
            (block.attn.c_proj, ours.attn.out_proj, True),
            (block.ln_2, ours.ln2, False),
            (block.mlp.c_fc, ours.mlp.up, True),
            (block.mlp.c_proj, ours.mlp.down, True),
        ]
        for theirs, mine, transposed in pairs:
            theirs.weight.copy_(mine.weight.T if transposed else mine.weight)
            theirs.bias.copy_(mine.bias)
    return hf


@torch.no_grad()
def gpt2_examples(hf: GPT2LMHeadModel, heldout: torch.Tensor, max_seq_len: int) -> list[Example]:
    """Held-out token ids of each length (from evenly spaced places) and GPT-2's float64 logits."""
    lengths = sorted({min(n, max_seq_len) for n in EXAMPLE_LENGTHS})
    model64 = hf.to(torch.float64)
    examples = []
    for i, seq_len in enumerate(lengths):
        start = (heldout.numel() - seq_len) * i // len(lengths)
        ids = heldout[start : start + seq_len].clone()
        examples.append(Example(ids, model64(ids.unsqueeze(0)).logits[0].to(torch.float32)))
    hf.to(torch.float32)
    return examples


def save_curve(curve: dict[str, list[Any]], path: Path, unigram: float, long_from: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.plots.figure import save_figure

    figure, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    ax.plot(curve["step"], curve["train_nats"], lw=0.8, alpha=0.6, label="training batch")
    ax.plot(curve["eval_step"], curve["heldout_nats"], "o-", label="held-out probe (8 windows)")
    ax.axhline(unigram, color="gray", ls="--", label=f"held-out unigram entropy {unigram:.2f}")
    ax.axhline(QUALITY_BAR * unigram, color="gray", ls=":", label=f"quality bar {QUALITY_BAR} × entropy")
    if long_from:
        ax.axvline(long_from, color="black", lw=0.8, ls="-.", label="context extended (long windows)")
    ax.set(xlabel="step", ylabel="next-token loss (nats/token)", title="Reference model training")
    ax.legend()
    save_figure(figure, path)
    plt.close(figure)


def write_notice(path: Path, names: list[str]) -> None:
    """Where the held-out text comes from, and the PSF licence it is under."""
    licence = stdlib_root() / "LICENSE.txt"
    lines = [
        f"{HELDOUT_FILE}: source files of the Python standard library (CPython), concatenated in this order",
        "(the last one cut at a line end). They are not in the training text of reference_model.safetensors.",
        "Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.",
        "Distributed under the PSF License Agreement, reproduced below.",
        "",
        *(f"    {name}" for name in names),
        "",
        licence.read_text(encoding="utf-8")
        if licence.is_file()
        else "See https://docs.python.org/3/license.html",
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    args = parse_args()
    config = load_config(args.config) if args.config is not None else ModelConfig()
    seq_len = config.sequence_length(args.seq_len or min(DEFAULT_WINDOW, config.max_seq_len))
    started = time.perf_counter()
    torch.manual_seed(args.seed)

    split = split_stdlib(args.seed, args.heldout_bytes)
    train_texts = [doc.text for doc in split.train]
    if args.max_train_bytes is not None:
        kept, size = [], 0
        for text in train_texts:
            if size >= args.max_train_bytes:
                break
            kept.append(text)
            size += len(text.encode())
        train_texts = kept
    heldout_text = "".join(doc.text for doc in split.heldout)
    tokenizer = train_bpe(train_texts, config.vocab_size)
    if tokenizer.get_vocab_size() != config.vocab_size:
        raise SystemExit(f"the tokenizer has {tokenizer.get_vocab_size()} tokens, not {config.vocab_size}")
    ids = torch.tensor([t for e in tokenizer.encode_batch(train_texts) for t in e.ids], dtype=torch.long)
    heldout = torch.tensor(tokenizer.encode(heldout_text).ids, dtype=torch.long)
    tokenized_s = time.perf_counter() - started
    print(
        f"training text: {len(train_texts)} files, {ids.numel():,} tokens; held out: "
        f"{len(split.heldout)} files, {len(heldout_text.encode()):,} bytes, {heldout.numel():,} tokens"
    )

    model = Transformer(config)
    curve, recipe = train(model, ids, heldout, args, seq_len)
    trained_s = time.perf_counter() - started

    window = min(DEFAULT_WINDOW, config.max_seq_len)
    score = score_text(model, token_windows(heldout, window))
    by_window = {
        str(n): score_text(model, token_windows(heldout, n)).loss_nats
        for n in sorted({window, config.max_seq_len})
    }
    unigram = unigram_entropy(heldout)
    hf = to_gpt2(model)
    examples = gpt2_examples(hf, heldout, config.max_seq_len)

    out, plots = args.out_dir, args.plots_dir
    out.mkdir(parents=True, exist_ok=True)
    plots.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / TOKENIZER_FILE) as tmp:
        tokenizer.save(str(tmp))
    with atomic_path(out / HELDOUT_FILE) as tmp:
        tmp.write_bytes(heldout_text.encode("utf-8"))
    write_notice(out / HELDOUT_NOTICE, [doc.name for doc in split.heldout])
    metadata = {"made_by": f"scripts/train_reference.py --steps {args.steps} --seed {args.seed}"}
    with atomic_path(out / SHIPPED_WEIGHTS) as tmp:
        save_file(to_supplied_format(hf), str(tmp), metadata=metadata)
    write_examples(examples, out / SHIPPED_EXAMPLES)
    with resources.as_file(resources.files("toolkit").joinpath("data/keys_mapping.json")) as mapping:
        shutil.copyfile(mapping, out / "keys_mapping.json")
    save_curve(curve, plots / CURVE_FILE, unigram, recipe.long_from)
    elapsed = time.perf_counter() - started
    record = {
        "command": "python scripts/train_reference.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and "dir" not in k
        ),
        "config": config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "batch": args.batch,
        "seq_len": seq_len,
        "long_every": args.long_every,
        "long_from": recipe.long_from,
        "recipe": recipe.to_dict(),
        "train_tokens_seen": sum(curve["tokens"]),
        "train_tokens": ids.numel(),
        "train_files": len(train_texts),
        "heldout_files": len(split.heldout),
        "heldout_tokens_scored": score.tokens,
        "heldout_nats": score.loss_nats,
        "heldout_perplexity": score.perplexity,
        "heldout_nats_by_window": by_window,
        "unigram_nats": unigram,
        "loss_over_unigram": score.loss_nats / unigram,
        "tokenize_s": tokenized_s,
        "train_s": trained_s - tokenized_s,
        "total_s": elapsed,
        "threads": torch.get_num_threads(),
        "curve": curve,
    }
    with atomic_path(out / RECORD_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    verdict = "met" if score.loss_nats <= QUALITY_BAR * unigram else "NOT met"
    print(
        f"held-out loss {score.loss_nats:.4f} nats/token (perplexity {score.perplexity:.2f}) over "
        f"{score.tokens:,} tokens; unigram entropy {unigram:.4f} nats/token; ratio "
        f"{score.loss_nats / unigram:.3f} (bar {QUALITY_BAR}: {verdict}); {elapsed / 60:.1f} min"
    )
    print("held-out loss by window: " + ", ".join(f"{n} tokens {v:.4f}" for n, v in by_window.items()))


if __name__ == "__main__":
    main()
