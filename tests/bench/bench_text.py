"""Scoring held-out text: toolkit against transformers' GPT-2, and `toolkit ablate` end to end.

In one run, on the shipped trained model and ``weights/heldout.txt`` (windows of 256 tokens, batches
of 16, float32, CPU): the toolkit's ``score_text`` and ``GPT2LMHeadModel`` holding the same weights
(its default attention) score the same token windows, interleaved round by round. Printed: tokens/s
of each (median and IQR over rounds), the ratio (target toolkit >= 0.8x transformers) and the
largest difference between their losses. Then ``toolkit ablate`` on the shipped defaults (six
variants: outputs, held-out loss and latency) is run once as a user would, and its wall time printed
(target <= 180 s on 2 cores).
Run: ``nox -s bench -- tests/bench/bench_text.py`` (needs transformers) [--rounds N] [--no-ablate].
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

if importlib.util.find_spec("transformers") is None:
    sys.exit("bench_text.py needs transformers: run it with 'nox -s bench -- tests/bench/bench_text.py'")

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
from checkpoints import from_supplied

from toolkit import ModelConfig
from toolkit.text import read_tokenizer, score_text, token_windows
from toolkit.weights import load_checkpoint, shipped_files

WINDOW, BATCH = 256, 16


@torch.inference_mode()
def gpt2_score(hf: torch.nn.Module, windows: torch.Tensor) -> float:
    total = 0.0
    for start in range(0, windows.shape[0], BATCH):
        rows = windows[start : start + BATCH]
        logits = hf(rows[:, :-1]).logits
        total += float(F.cross_entropy(logits.transpose(1, 2), rows[:, 1:], reduction="sum"))
    return total / (windows.shape[0] * WINDOW)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return q1, median, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-ablate", action="store_true")
    args = parser.parse_args()
    weights, _ = shipped_files()
    folder = weights.parent
    text = (folder / "heldout.txt").read_text(encoding="utf-8")
    ids = torch.tensor(read_tokenizer(folder / "tokenizer.json").encode(text).ids)
    windows = token_windows(ids, WINDOW)
    tokens = windows.shape[0] * WINDOW
    model, _ = load_checkpoint(weights, n_heads=2)
    hf = from_supplied(load_file(str(weights)), ModelConfig())
    hf.config._attn_implementation = "sdpa"  # transformers' default, its fastest CPU path
    rates: dict[str, list[float]] = {"toolkit": [], "transformers": []}
    losses: dict[str, float] = {}
    print(f"scoring {tokens:,} tokens ({windows.shape[0]} windows of {WINDOW}), {args.rounds} rounds ...")
    for _ in range(args.rounds):
        for name in rates:
            start = time.perf_counter()
            if name == "toolkit":
                losses[name] = score_text(model, windows, batch_size=BATCH).loss_nats
            else:
                losses[name] = gpt2_score(hf, windows)
            rates[name].append(tokens / (time.perf_counter() - start))
    for name, values in rates.items():
        q1, median, q3 = quartiles(values)
        print(f"  {name:12s} {median:9,.0f} tokens/s (IQR {q1:,.0f}–{q3:,.0f}); loss {losses[name]:.6f} nats")
    ratio = statistics.median(rates["toolkit"]) / statistics.median(rates["transformers"])
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(f"  toolkit / transformers throughput: {ratio:.2f}x (target >= 0.8x: {verdict})")
    print(f"  |loss difference|: {abs(losses['toolkit'] - losses['transformers']):.2e} nats")
    if args.no_ablate:
        return
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "toolkit", "ablate", "--no-plot"], check=True, stdout=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - start
    verdict = "met" if seconds <= 180 else "NOT met"
    print(f"toolkit ablate on the shipped defaults: {seconds:.0f} s (target <= 180 s: {verdict})")


if __name__ == "__main__":
    main()
