"""Issue 4's check of the timing engine on real timings: A/A is quiet, a +5% slowdown is found.

Three arms timed interleaved by ``toolkit.timing.compare``: the default model's forward pass
(the baseline), the same callable again (the A/A control, added by ``compare``), a second
identical arm ("same"), and a deliberately slowed variant that runs the forward pass and then
busy-waits for 5% of the baseline's median (measured beforehand). Targets: neither the A/A control
nor "same" is significant; "+5%" is significant, with a CI that covers +5%.
Run: ``python tests/bench/bench_timing.py [--budget S] [--seq-len S] [--threads N]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from toolkit import ModelConfig, Transformer
from toolkit.device import device_name
from toolkit.tables.timing import caution_text
from toolkit.timing import TimingContext, compare, configure_allocator, measure

SLOWDOWN = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of interleaved timing")
    parser.add_argument("--seq-len", type=int, default=512, help="input length for the default model")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: least disturbed by other processes)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator = configure_allocator()
    cpu = torch.device("cpu")
    model = Transformer(ModelConfig()).eval()
    ids = torch.randint(
        0, model.config.vocab_size, (1, args.seq_len), generator=torch.Generator().manual_seed(0)
    )

    def forward() -> object:
        return model(ids)

    base_ms = measure(forward, device=cpu, budget_s=3.0, min_samples=10).median_ms
    extra_s = SLOWDOWN * base_ms / 1e3

    def slowed() -> object:
        out = model(ids)
        deadline = time.perf_counter() + extra_s
        while time.perf_counter() < deadline:  # extra work of a fixed duration: +5% of the baseline
            pass
        return out

    same = model  # a second arm with the identical computation, under its own name

    result = compare(
        {"forward": forward, "same": lambda: same(ids), "+5%": slowed},
        baseline="forward",
        device=cpu,
        budget_s=args.budget,
        target_rel_ci=0.01,
        min_rounds=20,
        context=TimingContext.capture(cpu, torch.float32, batch=1, seq_len=args.seq_len),
    )
    print(f"device: {device_name(cpu)}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"allocator: {allocator}")
    print(
        f"default model, S={args.seq_len}: baseline {base_ms:.2f} ms before the run; slowed arm adds "
        f"{extra_s * 1e3:.2f} ms of busy-waiting"
    )
    print(f"{result.rounds} interleaved rounds in {result.elapsed_s:.1f} s (stop: {result.stop_reason})")
    for name, m in result.measurements.items():
        print(f"  {name:<14} median {m.median_ms:8.2f} ms  IQR {m.iqr_ms:6.2f} ms  n={m.n_samples}")
    print(f"noise floor (A/A control): ±{result.noise_floor_pct:.2f}%")
    for name, d in result.differences.items():
        verdict = "significant" if d.significant else "not significant"
        print(
            f"  {name:<14} ratio {d.ratio:.4f}  {d.diff_pct:+.2f}% "
            f"(95% CI {d.ci_low_pct:+.2f}%..{d.ci_high_pct:+.2f}%)  {verdict}"
        )
    aa = result.aa_control
    quiet = aa is not None and not aa.significant and not result.differences["same"].significant
    slow = result.differences["+5%"]
    found = slow.significant and slow.ci_low_pct <= 100 * SLOWDOWN <= slow.ci_high_pct
    print(f"target: A/A and 'same' not significant: {'met' if quiet else 'NOT met'}")
    print(f"target: +5% found significant, CI covering +5%: {'met' if found else 'NOT met'}")
    for caution in result.cautions():
        print(f"warning: {caution_text(caution)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
