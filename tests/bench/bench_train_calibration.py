"""Is ``ablate --train``'s verdict calibrated? The custom LayerNorm (the same function as torch's) as a
variant of a torch-LayerNorm base, judged at the defaults again and again.

Each repetition is one ``ablate --train --norm custom`` at the default recipe and size, on seeds of
its own (3r, 3r + 1, 3r + 2 for the default 3 seeds), so the repetitions are independent. The variant
computes the same function as the base, with other rounding: a calibrated verdict calls it real in
at most 5% of the repetitions. The base's final-loss std over the seeds of each repetition is the
recipe's stability (target ≤ 0.02 nats).

Targets: called real in ≤ 5% of ≥ 20 repetitions; the base's seed-to-seed std ≤ 0.02 nats.
Run: ``nox -s bench -- tests/bench/bench_train_calibration.py`` or
``python tests/bench/bench_train_calibration.py [--repeats 20] [--steps 300] [--seeds 3]`` (about 2.5
minutes a repetition on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calibration import rate_text, verdict

from toolkit.studies.ablation.training import run_training_ablation
from toolkit.studies.ablation.variants import norm_variant
from toolkit.studies.settings import TRAINED_BASE
from toolkit.training import Recipe
from toolkit.training.data import training_text

FALSE_POSITIVE_TARGET = 0.05
STD_TARGET = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    text = training_text()
    recipe = Recipe(steps=args.steps, eval_every=max(1, args.steps // 10))
    base = TRAINED_BASE.replace(vocab_size=text.vocab_size, max_seq_len=recipe.seq_len, norm="torch")
    variant = norm_variant("custom")
    real = 0
    stds, deltas = [], []
    started = time.perf_counter()
    for repeat in range(args.repeats):
        seeds = list(range(repeat * args.seeds, (repeat + 1) * args.seeds))
        result = run_training_ablation(base, [variant], recipe, text.train, text.heldout, seeds)
        assert result is not None
        change = result.changes[0]
        real += change.significant
        finals = list(result.base.finals().values())
        stds.append(statistics.stdev(finals))
        deltas.append(change.delta_nats)
        minutes = (time.perf_counter() - started) / 60
        print(
            f"repeat {repeat + 1:>2}/{args.repeats} seeds {seeds}: base {statistics.mean(finals):.4f} ± "
            f"{stds[-1]:.4f}, Δ {change.delta_nats:+.2e} [{change.ci_low:+.2e}, {change.ci_high:+.2e}] "
            f"{'REAL' if change.significant else 'not real'} ({minutes:.1f} min)",
            flush=True,
        )
    print(f"threads {torch.get_num_threads()}; {args.steps} steps × {recipe.tokens_per_step} tokens, "
          f"{args.seeds} seeds per repetition")  # fmt: skip
    print(
        f"custom LayerNorm called real: {rate_text(real, args.repeats)} of {args.repeats} repetitions; "
        f"target ≤ {FALSE_POSITIVE_TARGET:.0%}: {verdict(real / args.repeats <= FALSE_POSITIVE_TARGET)}"
    )
    mean_std = statistics.mean(stds)
    print(
        f"base final-loss std over seeds: mean {mean_std:.4f} nats (max {max(stds):.4f}); target ≤ "
        f"{STD_TARGET}: {verdict(mean_std <= STD_TARGET)}; Δ mean {statistics.mean(deltas):+.2e} nats"
    )


if __name__ == "__main__":
    main()
