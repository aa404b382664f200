"""Issue 25's trainer target: the toolkit's trainer against a plain PyTorch loop, tokens per second.

The same model (``ablate --train``'s default base, initialised alike), the same batches and the same
AdamW (the recipe's parameter groups) in both arms; the plain loop is nanoGPT's: forward, cross-entropy,
zero_grad, backward, clip, step, ``loss.item()``. The arms alternate in blocks of ``--block`` steps
(the first arm of each round alternating), each block timed with ``perf_counter``; the verdict is the
median over rounds of (trainer tokens/s) / (plain tokens/s) with its distribution-free 95% CI.

Target: trainer ≥ 1.0× the plain loop's tokens/s in one run.
Run: ``nox -s bench -- tests/bench/bench_training.py`` or
``python tests/bench/bench_training.py [--rounds 20] [--block 10]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.device import device_name
from toolkit.studies.settings import TRAINED_BASE
from toolkit.timing.decision import median_ci
from toolkit.training import Recipe
from toolkit.training.data import training_text
from toolkit.training.loop import Batches, Trainer, build_model, heldout_windows

TARGET = 1.0


def plain_loop(model: torch.nn.Module, batches: Batches, recipe: Recipe) -> Callable[[int], float]:
    """nanoGPT's loop, one step per call: the learning rate set by hand, the same AdamW groups."""
    optimizer = recipe.optimizer(model)

    def step(index: int) -> float:
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate(index)
        inputs, targets = batches(index)
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=10, help="Steps per timed block.")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    text = training_text()
    steps = (args.rounds + 1) * args.block
    recipe = Recipe(steps=steps, eval_every=10**9)  # one evaluation, at step 0, outside the timing
    config = TRAINED_BASE.replace(vocab_size=text.vocab_size, max_seq_len=recipe.seq_len)
    heldout = heldout_windows(text.heldout, recipe.seq_len, 16)
    trainer = Trainer(build_model(config, 0, cpu), Batches(text.train, recipe, 0), recipe, heldout)
    plain = plain_loop(build_model(config, 0, cpu), Batches(text.train, recipe, 0), recipe)
    arms: dict[str, Callable[[int], float]] = {"trainer": trainer.step, "plain loop": plain}
    for step in arms.values():  # warm-up block: step 0 (and the trainer's one evaluation)
        for index in range(args.block):
            step(index)
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for round_index in range(args.rounds):
        names = list(arms) if round_index % 2 == 0 else list(reversed(arms))
        first = (round_index + 1) * args.block
        for name in names:
            started = time.perf_counter()
            for index in range(first, first + args.block):
                arms[name](index)
            seconds[name].append(time.perf_counter() - started)
    tokens = args.block * recipe.tokens_per_step
    log_ratio = np.log(np.asarray(seconds["plain loop"]) / np.asarray(seconds["trainer"]))
    low, high = median_ci(log_ratio)
    ratio = math.exp(float(np.median(log_ratio)))
    print(f"device: {device_name(cpu)}, threads {torch.get_num_threads()}; model {config.d_model}×"
          f"{config.n_layers} layers, {recipe.batch}×{recipe.seq_len} tokens/step, {args.rounds} rounds × "
          f"{args.block} steps per arm")  # fmt: skip
    for name, values in seconds.items():
        print(f"  {name:<11} {tokens / float(np.median(values)):>10,.0f} tokens/s (median block)")
    met = "met" if ratio >= TARGET else "NOT met"
    print(
        f"trainer / plain loop tokens/s: {ratio:.3f}× (95% CI {math.exp(low):.3f}–{math.exp(high):.3f}); "
        f"target ≥ {TARGET:.1f}×: {met}"
    )


if __name__ == "__main__":
    main()
