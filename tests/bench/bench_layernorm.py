"""The norms' performance targets (issue 24): the custom LayerNorm and RMSNorm against torch's, side by
side in one run.

For each shape of the grid (default 4096×256, 16384×1024, 8192×4096, float32), forward and
forward+backward of torch's norm, the fastest custom backend for the device (numba on CPU, triton on
CUDA) and ``y.copy_(x)`` are timed interleaved by ``toolkit.timing.compare`` (through
``toolkit.studies.layernorm.measure_speed``, allocator configured so page faults do not distort
large tensors); for the RMSNorm, torch's LayerNorm is timed in the same rounds.

Targets, CPU: custom LayerNorm forward+backward ≤ 0.8× and forward ≤ 1.0× torch's at every shape;
custom RMSNorm forward+backward ≤ 0.5× torch.nn.RMSNorm and ≤ 1.0× torch.nn.LayerNorm. CUDA: both
norms ≥ 1.0× torch (time ratio ≤ 1.0) at every shape, forward ≥ 85% of the measured copy bandwidth.
Then, with no target: forward+backward of both norms without weight and bias
(``elementwise_affine=False``), so the input gradient alone, the path of frozen and affine-free norms
(``--input-grad-budget 0`` leaves it out).
Run: ``python tests/bench/bench_layernorm.py [--device auto|cpu|cuda] [--budget S] [--norm layer|rms|both]``.
"""

from __future__ import annotations

import argparse

import torch

from toolkit.device import resolve_device
from toolkit.layernorm import LayerNorm, RMSNorm
from toolkit.studies.layernorm import (
    DEFAULT_SHAPES,
    PASSES,
    LayerNormFn,
    SpeedResult,
    SpeedRow,
    make_inputs,
    measure_speed,
)
from toolkit.studies.layernorm.speed import forward_backward_call
from toolkit.tables.timing import caution_text
from toolkit.timing import compare

CPU_LAYER_FWD_BWD = 0.8  # × torch.nn.LayerNorm
CPU_LAYER_FWD = 1.0
CPU_RMS_VS_TORCH = 0.5  # forward+backward, × torch.nn.RMSNorm
CPU_RMS_VS_LAYERNORM = 1.0  # forward+backward, × torch.nn.LayerNorm
CUDA_TARGET_RATIO = 1.0
CUDA_TARGET_COPY_PCT = 85.0


def _checks(
    norm: str, cuda: bool, pass_name: str, custom: SpeedRow, vs_layernorm: float | None
) -> list[bool]:
    """The issue's targets for one (norm, pass) row."""
    if cuda:
        return [custom.ratio_to_torch <= CUDA_TARGET_RATIO] + (
            [custom.pct_of_copy >= CUDA_TARGET_COPY_PCT] if pass_name == "forward" else []
        )
    if norm == "layer":
        return [custom.ratio_to_torch <= (CPU_LAYER_FWD if pass_name == "forward" else CPU_LAYER_FWD_BWD)]
    if pass_name == "forward":
        return []
    assert vs_layernorm is not None
    return [custom.ratio_to_torch <= CPU_RMS_VS_TORCH, vs_layernorm <= CPU_RMS_VS_LAYERNORM]


def report(norm: str, result: SpeedResult, shapes: list[tuple[int, int]], cuda: bool) -> bool:
    """Print one norm's rows against its targets; whether every target was met."""
    torch_name = "torch.nn.RMSNorm" if norm == "rms" else "torch.nn.LayerNorm"
    print(f"\n{norm.upper()} NORM: custom vs {torch_name}")
    header = f"{'M×N':>11} {'pass':>16} {'torch ms':>9} {'custom ms':>9} {'ratio (95% CI)':>20} "
    extra = f"{'× LN':>6} " if norm == "rms" else ""
    print(header + extra + f"{'GB/s':>7} {'copy GB/s':>9} {'% copy':>6} {'noise %':>7}  target")
    met = True
    for shape in shapes:
        label = f"{shape[0]}x{shape[1]}"
        for pass_name in PASSES:
            rows = [r for r in result.rows if (r.rows, r.row_size) == shape and r.pass_name == pass_name]
            torch_row = next(r for r in rows if r.implementation == "torch")
            custom = result.best_custom(shape, pass_name)
            assert custom is not None
            layernorm = next((r for r in rows if r.implementation == "torch-layernorm"), None)
            vs_layernorm = None if layernorm is None else custom.timing.median_ms / layernorm.timing.median_ms
            checks = _checks(norm, cuda, pass_name, custom, vs_layernorm)
            ok = all(checks)
            met &= ok
            verdict = "—" if not checks else ("met" if ok else "MISSED")
            ratio = f"{custom.ratio_to_torch:.3f} ({custom.ratio_ci_low:.3f}–{custom.ratio_ci_high:.3f})"
            noise = result.noise_floor_pct[f"{label} {pass_name}"]
            copy_gbs = result.copy_gb_per_s[f"{label} {pass_name}"]
            ln = f"{vs_layernorm:>6.3f} " if vs_layernorm is not None else ""
            print(
                f"{label:>11} {pass_name:>16} {torch_row.timing.median_ms:>9.3f} "
                f"{custom.timing.median_ms:>9.3f} "
                f"{ratio:>20} {ln}{custom.gb_per_s:>7.1f} {copy_gbs:>9.1f} {custom.pct_of_copy:>5.0f}% "
                f"{noise:>6.1f}%  {verdict} ({custom.implementation})"
            )
    if cuda:
        targets = (
            f"custom ≤ {CUDA_TARGET_RATIO}× torch everywhere, forward ≥ {CUDA_TARGET_COPY_PCT:.0f}% of copy"
        )
    elif norm == "layer":
        targets = (
            f"custom forward+backward ≤ {CPU_LAYER_FWD_BWD}× and forward ≤ {CPU_LAYER_FWD}× torch "
            "at every shape"
        )
    else:
        targets = (
            f"custom forward+backward ≤ {CPU_RMS_VS_TORCH}× torch.nn.RMSNorm and ≤ {CPU_RMS_VS_LAYERNORM}× "
            "torch.nn.LayerNorm at every shape"
        )
    print(f"target ({targets}): {'MET' if met else 'NOT MET'}")
    for caution in result.cautions[:5]:
        print(f"warning: {caution_text(caution)}")
    return met


def _input_only(module: torch.nn.Module) -> LayerNormFn:
    """An affine-free norm as a study implementation: weight and bias are not used, so only the input's
    gradient is computed."""
    return lambda x, _weight, _bias: module(x)


def input_gradient_only(device: torch.device, shapes: list[tuple[int, int]], budget_s: float) -> None:
    """Forward+backward of affine-free norms (the input gradient alone), custom against torch's."""
    print("\nINPUT GRADIENT ONLY (elementwise_affine=False), forward+backward; no target")
    print(f"{'M×N':>11} {'norm':>6} {'torch ms':>9} {'custom ms':>9} {'ratio (95% CI)':>20} {'noise %':>7}")
    pairs = {"layer": (LayerNorm, torch.nn.LayerNorm), "rms": (RMSNorm, torch.nn.RMSNorm)}
    for rows, row_size in shapes:
        x, weight, bias, dy = make_inputs((rows, row_size), torch.float32, device)
        for norm, (custom_class, torch_class) in pairs.items():
            norms = {
                "torch": _input_only(torch_class(row_size, elementwise_affine=False, device=device)),
                "custom": _input_only(custom_class(row_size, elementwise_affine=False, device=device)),
            }
            result = compare(
                {name: forward_backward_call(fn, x, weight, bias, dy) for name, fn in norms.items()},
                baseline="torch",
                device=device,
                budget_s=budget_s,
            )
            custom = result.differences["custom"]
            low, high = 1 + custom.ci_low_pct / 100, 1 + custom.ci_high_pct / 100
            ratio = f"{custom.ratio:.3f} ({low:.3f}–{high:.3f})"
            print(
                f"{f'{rows}x{row_size}':>11} {norm:>6} {result.measurements['torch'].median_ms:>9.3f} "
                f"{result.measurements['custom'].median_ms:>9.3f} {ratio:>20} {result.noise_floor_pct:>6.1f}%"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timing per shape and pass")
    parser.add_argument("--shapes", default=",".join(f"{m}x{n}" for m, n in DEFAULT_SHAPES))
    parser.add_argument("--norm", default="both", choices=("layer", "rms", "both"))
    parser.add_argument(
        "--input-grad-budget", type=float, default=3.0, help="seconds per shape and norm, input gradient only"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    shapes = [(int(m), int(n)) for m, n in (item.split("x") for item in args.shapes.split(","))]
    met = True
    for norm in ("layer", "rms") if args.norm == "both" else (args.norm,):
        result = measure_speed(device, torch.float32, shapes, budget_s=args.budget, norm=norm)
        if norm == "layer" or args.norm == "rms":
            print(f"device: {result.device}, {result.dtype}, {result.threads} threads")
            print(f"allocator: {result.allocator}")
            print(
                "bytes: forward 2·M·N·4, forward+backward 5·M·N·4; copy = y.copy_(x), timed beside each shape"
            )
        met &= report(norm, result, shapes, device.type == "cuda")
    if args.input_grad_budget > 0:
        input_gradient_only(device, shapes, args.input_grad_budget)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
