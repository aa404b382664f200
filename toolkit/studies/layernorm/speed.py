"""Speed: forward and forward+backward over a grid of (rows M, row size N), timed interleaved with
:func:`toolkit.timing.compare` beside a plain copy of the same tensor, so that achieved bandwidth is set
against the machine's copy bandwidth measured in the same run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from toolkit.device import synchronize
from toolkit.errors import ConfigError
from toolkit.layernorm import available_backends
from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import stop_requested
from toolkit.studies.layernorm.implementations import LayerNormFn, implementations, make_inputs
from toolkit.studies.settings import DEFAULT_SHAPES
from toolkit.timing.engine import compare
from toolkit.timing.machine import capture_context, configure_allocator
from toolkit.timing.stats import Caution, Comparison, Measurement

PASSES = ("forward", "forward+backward")


def bytes_moved(shape: tuple[int, int], dtype: torch.dtype, pass_name: str) -> int:
    """Minimum memory traffic: forward reads x, writes y (2·M·N); backward reads x, dy, writes dx (3·M·N)."""
    M, N = shape
    element = torch.empty(0, dtype=dtype).element_size()
    factor = 2 if pass_name == "forward" else 5
    return factor * M * N * element


@dataclass
class SpeedRow:
    """One implementation at one shape and pass: its time and its achieved bandwidth."""

    implementation: str
    rows: int
    row_size: int
    pass_name: str
    timing: Measurement
    gb_per_s: float  # bytes_moved / median time
    pct_of_copy: float  # of the copy bandwidth measured in the same run
    ratio_to_torch: float  # paired median ratio; > 1 is slower than torch
    ratio_ci_low: float
    ratio_ci_high: float
    significant: bool  # the sign test rejects 1 at 5% after Holm over this comparison's arms
    significant_raw: bool = False  # the same, alone (the CI excludes 1)
    p_adjusted: float = float("nan")
    detectable_pct: float = float("nan")  # the smallest difference this run finds 80% of the time

    def to_dict(self) -> dict[str, Any]:
        return {
            "implementation": self.implementation,
            "rows": self.rows,
            "row_size": self.row_size,
            "pass_name": self.pass_name,
            **self.timing.statistics(),
            "gb_per_s": self.gb_per_s,
            "pct_of_copy": self.pct_of_copy,
            "ratio_to_torch": self.ratio_to_torch,
            "ratio_ci_low": self.ratio_ci_low,
            "ratio_ci_high": self.ratio_ci_high,
            "significant": self.significant,
            "significant_raw": self.significant_raw,
            "p_adjusted": self.p_adjusted,
            "detectable_pct": self.detectable_pct,
        }


@dataclass
class SpeedResult:
    """The shape grid: one row per (shape, pass, implementation), plus the copy reference."""

    device: str
    dtype: str
    threads: int
    allocator: str
    rows: list[SpeedRow]
    copy_gb_per_s: dict[str, float]  # "MxN pass" -> copy bandwidth measured in that comparison
    noise_floor_pct: dict[str, float]  # "MxN pass" -> the A/A control's noise floor
    cautions: list[Caution] = field(default_factory=list)  # subjects "MxN pass: arm"
    norm: str = "layer"  # "layer" or "rms"

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "device": self.device,
            "dtype": self.dtype,
            "threads": self.threads,
            "allocator": self.allocator,
            "bytes_convention": "forward 2·M·N·bytes (read x, write y); forward+backward 5·M·N·bytes "
            "(+ read x and dy, write dx)",
            "copy_gb_per_s": self.copy_gb_per_s,
            "noise_floor_pct": self.noise_floor_pct,
            "rows": [row.to_dict() for row in self.rows],
            "warnings": [c.to_dict() for c in self.cautions],
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([row.to_dict() for row in self.rows])

    def best_custom(self, shape: tuple[int, int], pass_name: str) -> SpeedRow | None:
        """The fastest custom backend at a shape and pass."""
        candidates = [
            r
            for r in self.rows
            if r.implementation.startswith("custom-")
            and (r.rows, r.row_size) == shape
            and r.pass_name == pass_name
        ]
        return min(candidates, key=lambda r: r.timing.median_ms, default=None)


def _forward_call(
    fn: LayerNormFn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> Callable[[], object]:
    return lambda: fn(x, weight, bias)


def forward_backward_call(
    fn: LayerNormFn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dy: torch.Tensor
) -> Callable[[], object]:
    """A call for :func:`toolkit.timing.compare`: ``fn`` on copies of the inputs that require gradients,
    and the gradients of the ones it uses (``allow_unused``: a norm without bias, or without
    parameters, gets None for them)."""
    xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, weight, bias))

    def step() -> object:
        # timing.compare runs calls under inference_mode; the backward needs autograd back on.
        with torch.inference_mode(False), torch.enable_grad():
            y = fn(xg, wg, bg)
            return torch.autograd.grad(y, (xg, wg, bg), dy, allow_unused=True)

    return step


def _copy_call(x: torch.Tensor) -> Callable[[], object]:
    """y.copy_(x) into a buffer allocated once: the reference for the machine's memory bandwidth."""
    out = torch.empty_like(x)
    return lambda: out.copy_(x)


def _rounds_progress(progress: ProgressCallback, step: int, total: int, description: str) -> ProgressCallback:
    """Report timing rounds as they pass, on the bar of the study's steps."""

    def report(done: int, _total: int, _text: str) -> None:
        progress(step, total, f"{description} (round {done})")

    return report


def measure_speed(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
    backends: Sequence[str] | None = None,
    budget_s: float = 4.0,
    target_rel_ci: float = 0.02,
    progress: ProgressCallback = no_progress,
    norm: str = "layer",
) -> SpeedResult:
    """Time forward and forward+backward of torch's and the custom norm, interleaved per shape.

    ``norm``: ``layer`` (LayerNorm) or ``rms`` (RMSNorm, with torch's LayerNorm timed beside it for
    scale). ``backends`` are the custom backends to time (default: the fast one for ``device``, i.e.
    numba on CPU and triton on CUDA, falling back to torch-ops). Each comparison also times ``copy``
    (``y.copy_(x)``, 2·M·N·bytes), so that bandwidth is judged against this machine, now.
    """
    available = available_backends(device)
    if backends is None:
        backends = [available[-1]]
    for backend in backends:
        if backend not in available:
            raise ConfigError(
                f"LayerNorm backend {backend!r} is not available on {device.type}; "
                f"available: {', '.join(available)}"
            )
    allocator = configure_allocator()  # freed blocks stay in the process: no page faults per call
    every = implementations(device, extra=("torch-layernorm",), norm=norm)
    impls = {name: fn for name, fn in every.items() if not name.startswith("custom-")}
    impls |= {f"custom-{b}": every[f"custom-{b}"] for b in backends}
    context = capture_context(device, dtype)
    rows: list[SpeedRow] = []
    copy_bandwidth: dict[str, float] = {}
    noise: dict[str, float] = {}
    cautions: list[Caution] = []
    total = len(shapes) * len(PASSES)
    for index, shape in enumerate(shapes):
        if stop_requested() is not None:
            break
        x, weight, bias, dy = make_inputs(shape, dtype, device)
        label = f"{shape[0]}x{shape[1]}"
        for pass_index, pass_name in enumerate(PASSES):
            if stop_requested() is not None:  # SIGINT / SIGTERM: keep the rows timed so far
                break
            step = 2 * index + pass_index
            description = f"speed: {label} {pass_name}"
            progress(step, total, description)
            if pass_name == "forward":
                calls = {name: _forward_call(fn, x, weight, bias) for name, fn in impls.items()}
            else:
                calls = {name: forward_backward_call(fn, x, weight, bias, dy) for name, fn in impls.items()}
            calls["copy"] = _copy_call(x)
            for fn in calls.values():  # compile kernels (numba, triton) before any timing
                fn()
            synchronize(device)
            comparison = compare(
                calls,
                baseline="torch",
                device=device,
                budget_s=budget_s,
                target_rel_ci=target_rel_ci,
                context=context,
                progress=_rounds_progress(progress, step, total, description),
            )
            copy_ms = comparison.measurements["copy"].median_ms
            copy_gbs = bytes_moved(shape, dtype, "forward") / (copy_ms * 1e-3) / 1e9
            copy_bandwidth[f"{label} {pass_name}"] = copy_gbs
            noise[f"{label} {pass_name}"] = comparison.noise_floor_pct
            cautions += [
                dataclasses.replace(c, subject=f"{label} {pass_name}: {c.subject}".rstrip(": "))
                for c in comparison.cautions()
            ]
            rows += _speed_rows(comparison, shape, dtype, pass_name, copy_gbs)
    progress(total, total, "speed: done")
    return SpeedResult(
        device=context.device_name,
        dtype=context.dtype,
        threads=context.threads,
        allocator=allocator,
        rows=rows,
        copy_gb_per_s=copy_bandwidth,
        noise_floor_pct=noise,
        cautions=cautions,
        norm=norm,
    )


def _speed_rows(
    comparison: Comparison, shape: tuple[int, int], dtype: torch.dtype, pass_name: str, copy_gbs: float
) -> list[SpeedRow]:
    rows = []
    for name, m in comparison.measurements.items():
        if name.endswith("(A/A)"):
            continue
        moved = bytes_moved(shape, dtype, "forward" if name == "copy" else pass_name)
        gbs = moved / (m.median_ms * 1e-3) / 1e9
        diff = comparison.differences.get(name)
        rows.append(
            SpeedRow(
                implementation=name,
                rows=shape[0],
                row_size=shape[1],
                pass_name=pass_name,
                timing=m,
                gb_per_s=gbs,
                pct_of_copy=100.0 * gbs / copy_gbs,
                ratio_to_torch=1.0 if diff is None else diff.ratio,
                ratio_ci_low=1.0 if diff is None else 1.0 + diff.ci_low_pct / 100.0,
                ratio_ci_high=1.0 if diff is None else 1.0 + diff.ci_high_pct / 100.0,
                significant=False if diff is None else diff.significant,
                significant_raw=False if diff is None else diff.significant_raw,
                p_adjusted=float("nan") if diff is None else diff.p_adjusted,
                detectable_pct=float("nan") if diff is None else diff.detectable_pct,
            )
        )
    return rows
