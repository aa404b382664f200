"""Issue 6's performance targets: the custom LayerNorm against torch's, side by side in one run.

For each shape of the grid (default 4096×256, 16384×1024, 8192×4096, float32), forward and
forward+backward of torch's LayerNorm, the fastest custom backend for the device (numba on CPU,
triton on CUDA) and ``y.copy_(x)`` are timed interleaved by ``toolkit.timing.compare`` (through
``toolkit.studies.layernorm.measure_speed``, allocator configured so page faults do not distort
large tensors).

Targets. CPU: custom forward+backward ≤ 1.2 × torch's at every shape. CUDA: custom ≤ 1.0 × torch's
(forward and forward+backward) at every shape, and forward ≥ 85% of the measured copy bandwidth for
N ≥ 4096. Run: ``python tests/bench/bench_layernorm.py [--device auto|cpu|cuda] [--budget S]``.
"""

from __future__ import annotations

import argparse

import torch

from toolkit.device import resolve_device
from toolkit.studies.layernorm import DEFAULT_SHAPES, PASSES, measure_speed
from toolkit.tables.timing import caution_text

CPU_TARGET_RATIO = 1.2
CUDA_TARGET_RATIO = 1.0
CUDA_TARGET_COPY_PCT = 85.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timing per shape and pass")
    parser.add_argument("--shapes", default=",".join(f"{m}x{n}" for m, n in DEFAULT_SHAPES))
    args = parser.parse_args()
    device = resolve_device(args.device)
    shapes = [tuple(int(v) for v in item.split("x")) for item in args.shapes.split(",")]
    result = measure_speed(device, torch.float32, shapes, budget_s=args.budget)  # type: ignore[arg-type]
    print(f"device: {result.device}, {result.dtype}, {result.threads} threads; allocator: {result.allocator}")
    print("bytes: forward 2·M·N·4, forward+backward 5·M·N·4; copy = y.copy_(x), timed beside each shape")
    header = f"{'M×N':>11} {'pass':>16} {'torch ms':>9} {'custom ms':>9} {'ratio (95% CI)':>20} "
    print(header + f"{'custom GB/s':>11} {'copy GB/s':>9} {'% copy':>6} {'noise %':>7}  target")
    cuda = device.type == "cuda"
    met = True
    for shape in shapes:
        label = f"{shape[0]}x{shape[1]}"
        for pass_name in PASSES:
            rows = [r for r in result.rows if (r.rows, r.row_size) == shape and r.pass_name == pass_name]
            torch_row = next(r for r in rows if r.implementation == "torch")
            custom = result.best_custom(shape, pass_name)  # type: ignore[arg-type]
            assert custom is not None
            limit = CUDA_TARGET_RATIO if cuda else CPU_TARGET_RATIO
            checks = [custom.ratio_to_torch <= limit] if (cuda or pass_name != "forward") else []
            if cuda and pass_name == "forward" and shape[1] >= 4096:
                checks.append(custom.pct_of_copy >= CUDA_TARGET_COPY_PCT)
            ok = all(checks)
            met &= ok
            verdict = "—" if not checks else ("met" if ok else "MISSED")
            ratio = f"{custom.ratio_to_torch:.3f} ({custom.ratio_ci_low:.3f}–{custom.ratio_ci_high:.3f})"
            noise = result.noise_floor_pct[f"{label} {pass_name}"]
            copy_gbs = result.copy_gb_per_s[f"{label} {pass_name}"]
            print(
                f"{label:>11} {pass_name:>16} {torch_row.timing.median_ms:>9.3f} "
                f"{custom.timing.median_ms:>9.3f} "
                f"{ratio:>20} {custom.gb_per_s:>11.1f} {copy_gbs:>9.1f} "
                f"{custom.pct_of_copy:>5.0f}% {noise:>6.1f}%  {verdict} ({custom.implementation})"
            )
    targets = (
        f"custom ≤ {CUDA_TARGET_RATIO}× torch everywhere, "
        f"forward ≥ {CUDA_TARGET_COPY_PCT:.0f}% of copy for N ≥ 4096"
        if cuda
        else f"custom forward+backward ≤ {CPU_TARGET_RATIO}× torch at every shape"
    )
    print(f"target ({targets}): {'MET' if met else 'NOT MET'}")
    for caution in result.cautions[:5]:
        print(f"warning: {caution_text(caution)}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
