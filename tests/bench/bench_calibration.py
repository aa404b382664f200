"""Is the timing verdict calibrated? False positives and power of ``toolkit.timing.compare`` on real timings.

Many short interleaved comparisons of a small model's forward pass, each timed exactly as
``toolkit ablate`` times its variants (the arms built by ``sharing_forwards``, every one holding
the same copy of the weights; ``compare`` with an A/A control and a ±1% target, stopping
early when every CI is that narrow): the baseline, an identical arm (the same architecture as an arm
of its own: the same work), and planted slowdowns of +1%, +2% and +5% (the forward pass, then
busy-waiting for that share of the baseline's median, measured beforehand). Per budget it prints how
often the identical arm was called significant (false positives) and how often each slowdown was
found (power), both with 95% Wilson intervals, raw and after Holm's adjustment over the four
variants, and the median smallest detectable effect the runs reported.

Targets: false positives <= 5% at every budget; +2% found >= 80% and +5% >= 95% at the default
``ablate`` budget (60 s).
Run: ``nox -s bench -- tests/bench/bench_calibration.py`` or
``python tests/bench/bench_calibration.py [--budgets 1,3,10,60] [--repeats 60] [--seq-len 64]`` (about
16 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from toolkit import ModelConfig, Transformer
from toolkit.device import device_name
from toolkit.studies.ablation import BASELINE, sharing_forwards
from toolkit.timing import aa_name, compare, configure_allocator, measure

PLANTED = {"+1%": 0.01, "+2%": 0.02, "+5%": 0.05}
SAME = "same"
ABLATE_BUDGET_S = 60.0  # toolkit ablate's default --budget
ABLATE_TARGET_REL_CI = 0.01  # and its target (toolkit.cli.ablate.ABLATION_TARGET_REL_CI)


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate."""
    if trials == 0:
        return math.nan, math.nan
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_text(successes: int, trials: int) -> str:
    low, high = wilson(successes, trials)
    return f"{100 * successes / trials:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def slowed(forward: Callable[[], object], extra_s: float) -> Callable[[], object]:
    def run() -> object:
        out = forward()
        deadline = time.perf_counter() + extra_s
        while time.perf_counter() < deadline:  # extra work of a fixed, measured duration
            pass
        return out

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1,3,10,60", help="seconds per comparison, comma-separated")
    parser.add_argument("--repeats", type=int, default=60, help="comparisons per budget")
    parser.add_argument("--seq-len", type=int, default=64, help="input length for the default model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    budgets = [float(b) for b in args.budgets.split(",")]
    configure_allocator()
    cpu = torch.device("cpu")
    model = Transformer(ModelConfig()).eval()
    ids = torch.randint(
        0, model.config.vocab_size, (1, args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    names = [SAME, *PLANTED]
    configs = dict.fromkeys([BASELINE, aa_name(BASELINE), *names], model.config)
    forwards = sharing_forwards(model, configs, ids)
    base_ms = measure(forwards[BASELINE], device=cpu, budget_s=3.0, min_samples=20).median_ms
    control = forwards.pop(aa_name(BASELINE))
    arms = {BASELINE: forwards[BASELINE], SAME: forwards[SAME]}
    arms |= {name: slowed(forwards[name], share * base_ms / 1e3) for name, share in PLANTED.items()}
    print(f"device: {device_name(cpu)}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"default model, S={args.seq_len}: forward {base_ms:.3f} ms (median, before the runs); "
        f"{args.repeats} comparisons per budget, each as toolkit ablate times (A/A control, target "
        f"±{100 * ABLATE_TARGET_REL_CI:.0f}%); the planted arms add "
        + ", ".join(f"{1e3 * share * base_ms:.1f} µs" for share in PLANTED.values())
    )
    summary: dict[float, dict[str, tuple[int, int]]] = {}
    for budget in budgets:
        raw = dict.fromkeys(names, 0)
        adjusted = dict.fromkeys(names, 0)
        aa_calls = 0
        detectable, rounds, elapsed, stops = [], [], [], []
        for _ in range(args.repeats):
            result = compare(
                arms,
                baseline=BASELINE,
                device=cpu,
                aa_control=control,
                budget_s=budget,
                target_rel_ci=ABLATE_TARGET_REL_CI,
            )
            for name in names:
                difference = result.differences[name]
                raw[name] += difference.significant_raw and (name == SAME or difference.diff_pct > 0)
                adjusted[name] += difference.significant and (name == SAME or difference.diff_pct > 0)
            aa = result.aa_control
            aa_calls += aa is not None and aa.significant
            detectable.append(result.differences[SAME].detectable_pct)
            rounds.append(result.rounds)
            elapsed.append(result.elapsed_s)
            stops.append(result.stop_reason)
        n = args.repeats
        print(
            f"\nbudget {budget:g} s: median {statistics.median(rounds):.0f} rounds in "
            f"{statistics.median(elapsed):.1f} s; stopped at the target in {stops.count('target')}/{n}; "
            f"median smallest detectable effect {statistics.median(detectable):.2f}%"
        )
        print(f"  {'arm':<6} {'called significant (raw, 95% CI)':<34} {'after Holm over 4 (95% CI)':<30}")
        for name in names:
            label = "false positives" if name == SAME else "found"
            print(f"  {name:<6} {rate_text(raw[name], n):<34} {rate_text(adjusted[name], n):<30} {label}")
        print(f"  A/A control differed (arms not exchangeable): {rate_text(aa_calls, n)}")
        summary[budget] = {name: (adjusted[name], n) for name in names}
    fp_met = all(summary[b][SAME][0] / summary[b][SAME][1] <= 0.05 for b in budgets)
    print(f"\ntarget: false positives <= 5% at every budget (Holm-adjusted): {verdict(fp_met)}")
    if ABLATE_BUDGET_S in summary:
        at = summary[ABLATE_BUDGET_S]
        two, five = at["+2%"][0] / at["+2%"][1], at["+5%"][0] / at["+5%"][1]
        print(f"target: +2% found >= 80% at ablate's budget: {verdict(two >= 0.8)} ({100 * two:.0f}%)")
        print(f"target: +5% found >= 95% at ablate's budget: {verdict(five >= 0.95)} ({100 * five:.0f}%)")
    else:
        print(f"(the power targets are judged at {ABLATE_BUDGET_S:g} s, not in --budgets)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
