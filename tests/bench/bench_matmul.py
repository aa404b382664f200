"""Issue 7's performance targets: the block-parallel product against NumPy's own multi-threaded matmul.

Same run, interleaved round by round (``toolkit.studies.matmul.run_matmul``): the parallel product
(timed in the parent, dispatch included) and NumPy's ``A @ B`` on all cores (timed in a worker).

Targets (float64, n = 4096, ``--kernel blas``, workers = cores):
- rows / cols / grid: parallel ≥ 1.0× NumPy; k (the classic split): ≥ 0.95×;
- 8 workers (more than the cores), k split: ≥ 0.9×;
- ``--kernel naive`` (pure-Python loops), 2 workers: ≥ 1.8× the same loop in one process.

Ratios are of medians, with a 95% paired bootstrap CI over rounds. Run:
``python tests/bench/bench_matmul.py [--size 4096] [--repeat 5] [--naive-size 240]``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from toolkit.matmul.pool import available_cores
from toolkit.studies.matmul import MatmulResult, MatmulSettings, make_inputs, run_matmul


def ratio_ci(
    numerator: tuple[float, ...], denominator: tuple[float, ...], seed: int = 0
) -> tuple[float, float]:
    """95% paired bootstrap CI of median(numerator) / median(denominator), resampling whole rounds."""
    top, bottom = np.asarray(numerator), np.asarray(denominator)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, top.size, size=(2000, top.size))
    ratios = np.median(top[index], axis=1) / np.median(bottom[index], axis=1)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def report(label: str, result: MatmulResult, against: str, target: float) -> bool:
    run = result.runs[0]
    reference = run.numpy if against == "numpy" else run.serial
    ratio = reference.median_ms / run.parallel.median_ms
    low, high = ratio_ci(reference.samples_ms, run.parallel.samples_ms)
    met = ratio >= target
    print(
        f"{label:<34} parallel {run.parallel.median_ms:9.1f} ms (IQR {run.parallel.iqr_ms:7.1f})  "
        f"{against} {reference.median_ms:9.1f} ms (IQR {reference.iqr_ms:7.1f})  "
        f"speed-up {ratio:5.2f}× [95% CI {low:.2f}–{high:.2f}]  target ≥ {target:.2f}×: "
        f"{'MET' if met else 'NOT MET'}  ({'correct' if result.correct else 'WRONG RESULT'})",
        flush=True,
    )
    return met and result.correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="n = k = m of the BLAS runs")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved timed rounds per run")
    parser.add_argument("--naive-size", type=int, default=240, help="n = k = m of the naive-kernel run")
    args = parser.parse_args()
    cores = available_cores()
    print(
        f"toolkit matmul benchmark: float64, {cores} cores, n = {args.size}, {args.repeat} rounds", flush=True
    )
    a, b = make_inputs(args.size, args.size, args.size, "float64", seed=0)
    all_met = True
    cases = [
        ("rows", cores, 1.0),
        ("cols", cores, 1.0),
        ("grid", cores, 1.0),
        ("k", cores, 0.95),
        ("k", 8, 0.9),
    ]
    for split, workers, target in cases:
        settings = MatmulSettings(split=split, kernel="blas", workers=(workers,), repeat=args.repeat)
        result = run_matmul(a, b, settings)
        all_met &= report(f"blas, split {split}, {workers} workers", result, "numpy", target)
    small_a, small_b = make_inputs(args.naive_size, args.naive_size, args.naive_size, "float64", seed=0)
    settings = MatmulSettings(split="rows", kernel="naive", workers=(2,), repeat=args.repeat)
    result = run_matmul(small_a, small_b, settings)
    all_met &= report(f"naive n={args.naive_size}, rows, 2 workers", result, "1 process", 1.8)
    print("all targets met" if all_met else "some targets NOT met (timings on a busy machine are noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
