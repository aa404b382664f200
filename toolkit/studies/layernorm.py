"""Does the custom LayerNorm match PyTorch's, and what does it cost in time, memory and training?

Four parts, each a function returning a result dataclass (``to_dict()`` for JSON, ``to_frame()``
for pandas); :func:`run_layernorm_study` runs the ones asked for.

- :func:`check_numerics`: output and input/weight/bias gradients of every implementation against
  a float64 reference computed from the same (rounded) inputs, for ordinary inputs and for a large
  mean offset, in float32 and bfloat16. A one-pass E[x²] − E[x]² LayerNorm shows the failure mode.
- :func:`measure_speed`: forward and forward+backward over a grid of (rows M, row size N), timed
  interleaved with :func:`toolkit.timing.compare` together with a plain copy of the same tensor,
  so achieved bandwidth is set against the machine's copy bandwidth measured in the same run.
- :func:`measure_memory`: bytes saved for the backward (saved-tensor hooks) and peak memory of
  one forward+backward per implementation.
- :func:`train_norms`: the same small GPT trained with each normalisation (same seed, same
  batches) on bytes of real text: speed, final validation loss, convergence, stability, and what
  the normalisation does to the hidden units.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import random
import sysconfig
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from toolkit.config import ModelConfig
from toolkit.device import device_name, synchronize
from toolkit.errors import ConfigError, DataError
from toolkit.layernorm import available_backends, layer_norm
from toolkit.model import Transformer
from toolkit.timing import Comparison, TimingContext, compare, configure_allocator

ProgressCallback = Callable[[int, int, str], None]
LayerNormFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

EPS = 1e-5
DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((4096, 256), (16384, 1024), (8192, 4096))
NUMERICS_SHAPE = (512, 1024)
NUMERICS_OFFSETS = (0.0, 1e3, 1e4)
NUMERICS_DTYPES = (torch.float32, torch.bfloat16)
MEMORY_SHAPE = (4096, 1024)
TRAIN_NORMS = ("torch", "custom", "rms", "none", "batch")
NORM_LABELS = {
    "torch": "torch LayerNorm",
    "custom": "custom LayerNorm",
    "rms": "RMSNorm",
    "none": "no normalisation",
    "batch": "BatchNorm (features)",
}


def _nothing(done: int, total: int, description: str) -> None:
    """The progress callback used when none is given."""


# --------------------------------------------------------------------------------------------------
# The implementations compared
# --------------------------------------------------------------------------------------------------


def _torch_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), weight, bias, EPS)


def _custom(backend: str) -> LayerNormFn:
    def run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, x.shape[-1], weight, bias, EPS, backend=backend)

    return run


def autograd_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The two-pass formulas in plain ops, differentiated by autograd (keeps every intermediate)."""
    xc = x.float()
    centred = xc - xc.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(centred.square().mean(dim=-1, keepdim=True) + EPS)
    return (centred * rstd * weight.float() + bias.float()).to(x.dtype)


def one_pass_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The textbook shortcut var = E[x²] − E[x]² in float32: cancels catastrophically at large means."""
    xc = x.float()
    mean = xc.mean(dim=-1, keepdim=True)
    variance = (xc * xc).mean(dim=-1, keepdim=True) - mean * mean
    return ((xc - mean) * torch.rsqrt(variance + EPS) * weight.float() + bias.float()).to(x.dtype)


def implementations(device: torch.device, extra: Sequence[str] = ()) -> dict[str, LayerNormFn]:
    """torch's LayerNorm and the custom one on every backend available on ``device``, then ``extra``.

    ``extra`` may name ``autograd-ops`` (plain ops, autograd's backward) and ``one-pass``.
    """
    impls: dict[str, LayerNormFn] = {"torch": _torch_layer_norm}
    for backend in available_backends(device):
        impls[f"custom-{backend}"] = _custom(backend)
    extras = {"autograd-ops": autograd_layer_norm, "one-pass": one_pass_layer_norm}
    for name in extra:
        impls[name] = extras[name]
    return impls


IMPLEMENTATION_LABELS = {
    "torch": "torch.nn.LayerNorm",
    "custom-torch-ops": "custom, torch-ops",
    "custom-numba": "custom, numba",
    "custom-triton": "custom, triton",
    "autograd-ops": "plain ops + autograd",
    "one-pass": "one-pass E[x²]−E[x]²",
    "copy": "copy (x → y)",
}


def _inputs(
    shape: tuple[int, int], dtype: torch.dtype, device: torch.device, offset: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x = offset + N(0, 1), weight = 1 + N(0, 0.1²), bias = N(0, 0.1²), dy = N(0, 1), in ``dtype``."""
    generator = torch.Generator().manual_seed(seed)
    M, N = shape
    x = offset + torch.randn(M, N, generator=generator, dtype=torch.float64)
    weight = 1.0 + 0.1 * torch.randn(N, generator=generator, dtype=torch.float64)
    bias = 0.1 * torch.randn(N, generator=generator, dtype=torch.float64)
    dy = torch.randn(M, N, generator=generator, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, weight, bias, dy))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------------------------------

_TENSORS = ("output", "grad_input", "grad_weight", "grad_bias")


@dataclass
class NumericsRow:
    """One implementation on one input: errors against the float64 reference, per tensor.

    ``*_error`` is max |value − reference| / max |reference| (relative to the tensor's scale);
    ``*_abs_error`` is max |value − reference|; NaN where the implementation produced NaN or inf.
    ``bitwise_equal_pct`` is the share of outputs bit-identical to torch's LayerNorm on the same input.
    """

    implementation: str
    dtype: str
    offset: float
    output_error: float
    grad_input_error: float
    grad_weight_error: float
    grad_bias_error: float
    output_abs_error: float
    grad_input_abs_error: float
    grad_weight_abs_error: float
    grad_bias_abs_error: float
    bitwise_equal_pct: float

    @property
    def case(self) -> str:
        return "N(0,1)" if self.offset == 0 else f"{self.offset:g} + N(0,1)"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "case": self.case}


@dataclass
class NumericsResult:
    """Every implementation × input case × dtype, on (M, N) rows."""

    shape: tuple[int, int]
    eps: float
    device: str
    rows: list[NumericsRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "eps": self.eps,
            "device": self.device,
            "reference": "float64 two-pass formulas (autograd) on the same rounded inputs",
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([row.to_dict() for row in self.rows])


def reference_layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dy: torch.Tensor, eps: float = EPS
) -> tuple[torch.Tensor, ...]:
    """y, dx, dweight, dbias in float64 from the textbook formulas, differentiated by autograd."""
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    mean = x64.mean(dim=-1, keepdim=True)
    variance = ((x64 - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (x64 - mean) / torch.sqrt(variance + eps) * w64 + b64
    grads = torch.autograd.grad(y, (x64, w64, b64), dy.double())
    return (y.detach(), *grads)


def _errors(value: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(max relative-to-scale error, max absolute error); NaN when ``value`` is not finite."""
    value = value.detach().double()
    if not bool(torch.isfinite(value).all()):
        return math.nan, math.nan
    abs_error = float((value - reference).abs().max())
    scale = float(reference.abs().max())
    return (abs_error / scale if scale > 0 else abs_error), abs_error


def check_numerics(
    device: torch.device,
    shape: tuple[int, int] = NUMERICS_SHAPE,
    offsets: Sequence[float] = NUMERICS_OFFSETS,
    dtypes: Sequence[torch.dtype] = NUMERICS_DTYPES,
    progress: ProgressCallback = _nothing,
) -> NumericsResult:
    """Errors of each implementation's output and gradients against a float64 reference."""
    impls = implementations(device, extra=("one-pass",))
    cases = [(dtype, offset) for dtype in dtypes for offset in offsets]
    rows: list[NumericsRow] = []
    for done, (dtype, offset) in enumerate(cases):
        progress(done, len(cases), f"numerics: {str(dtype).removeprefix('torch.')}, offset {offset:g}")
        x, weight, bias, dy = _inputs(shape, dtype, device, offset)
        reference = reference_layer_norm(x.cpu(), weight.cpu(), bias.cpu(), dy.cpu())
        torch_output: torch.Tensor | None = None
        for name, fn in impls.items():
            xg, wg, bg = (t.clone().requires_grad_() for t in (x, weight, bias))
            y = fn(xg, wg, bg)
            grads = torch.autograd.grad(y, (xg, wg, bg), dy)
            if name == "torch":
                torch_output = y.detach()
            assert torch_output is not None
            errors = [_errors(t.cpu(), ref) for t, ref in zip((y, *grads), reference, strict=True)]
            equal = y.detach().view(-1) == torch_output.view(-1)
            rows.append(
                NumericsRow(
                    implementation=name,
                    dtype=str(dtype).removeprefix("torch."),
                    offset=offset,
                    output_error=errors[0][0],
                    grad_input_error=errors[1][0],
                    grad_weight_error=errors[2][0],
                    grad_bias_error=errors[3][0],
                    output_abs_error=errors[0][1],
                    grad_input_abs_error=errors[1][1],
                    grad_weight_abs_error=errors[2][1],
                    grad_bias_abs_error=errors[3][1],
                    bitwise_equal_pct=100.0 * float(equal.double().mean()),
                )
            )
    progress(len(cases), len(cases), "numerics: done")
    return NumericsResult(shape=shape, eps=EPS, device=device_name(device), rows=rows)


# --------------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------------

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
    median_ms: float
    q25_ms: float
    q75_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n_samples: int
    page_faults_per_call: float
    gb_per_s: float  # bytes_moved / median time
    pct_of_copy: float  # of the copy bandwidth measured in the same run
    ratio_to_torch: float  # paired median ratio; > 1 is slower than torch
    ratio_ci_low: float
    ratio_ci_high: float
    significant: bool  # CI excludes 1 and the difference exceeds the A/A noise floor

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "threads": self.threads,
            "allocator": self.allocator,
            "bytes_convention": "forward 2·M·N·bytes (read x, write y); forward+backward 5·M·N·bytes "
            "(+ read x and dy, write dx)",
            "copy_gb_per_s": self.copy_gb_per_s,
            "noise_floor_pct": self.noise_floor_pct,
            "rows": [row.to_dict() for row in self.rows],
            "warnings": list(self.warnings),
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
        return min(candidates, key=lambda r: r.median_ms, default=None)


def _forward_call(
    fn: LayerNormFn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> Callable[[], object]:
    return lambda: fn(x, weight, bias)


def _forward_backward_call(
    fn: LayerNormFn, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dy: torch.Tensor
) -> Callable[[], object]:
    xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, weight, bias))

    def step() -> object:
        # timing.compare runs calls under inference_mode; the backward needs autograd back on.
        with torch.inference_mode(False), torch.enable_grad():
            y = fn(xg, wg, bg)
            return torch.autograd.grad(y, (xg, wg, bg), dy)

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
    progress: ProgressCallback = _nothing,
) -> SpeedResult:
    """Time forward and forward+backward of torch's and the custom LayerNorm, interleaved per shape.

    ``backends`` are the custom backends to time (default: the fast one for ``device``, i.e. numba
    on CPU and triton on CUDA, falling back to torch-ops). Each comparison also times ``copy``
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
    impls = {"torch": _torch_layer_norm} | {f"custom-{b}": _custom(b) for b in backends}
    context = TimingContext.capture(device, dtype)
    rows: list[SpeedRow] = []
    copy_bandwidth: dict[str, float] = {}
    noise: dict[str, float] = {}
    warnings: list[str] = []
    total = len(shapes) * len(PASSES)
    for index, shape in enumerate(shapes):
        x, weight, bias, dy = _inputs(shape, dtype, device)
        label = f"{shape[0]}x{shape[1]}"
        for pass_index, pass_name in enumerate(PASSES):
            step = 2 * index + pass_index
            description = f"speed: {label} {pass_name}"
            progress(step, total, description)
            if pass_name == "forward":
                calls = {name: _forward_call(fn, x, weight, bias) for name, fn in impls.items()}
            else:
                calls = {name: _forward_backward_call(fn, x, weight, bias, dy) for name, fn in impls.items()}
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
            warnings += [f"{label} {pass_name}: {w}" for w in comparison.warnings]
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
        warnings=warnings,
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
                median_ms=m.median_ms,
                q25_ms=m.q25_ms,
                q75_ms=m.q75_ms,
                ci_low_ms=m.ci_low_ms,
                ci_high_ms=m.ci_high_ms,
                n_samples=m.n_samples,
                page_faults_per_call=m.page_faults_per_call,
                gb_per_s=gbs,
                pct_of_copy=100.0 * gbs / copy_gbs,
                ratio_to_torch=1.0 if diff is None else diff.ratio,
                ratio_ci_low=1.0 if diff is None else 1.0 + diff.ci_low_pct / 100.0,
                ratio_ci_high=1.0 if diff is None else 1.0 + diff.ci_high_pct / 100.0,
                significant=False if diff is None else diff.significant,
            )
        )
    return rows


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


class _LiveTensorBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts bytes of tensor storages created under it while they are alive; keeps the peak.

    Deterministic (tensor bytes, not allocator pages) and device-agnostic; tensors created before
    entering (inputs, parameters) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            value.untyped_storage().data_ptr()
            for value in tree_flatten((args, kwargs))[0]
            if isinstance(value, torch.Tensor)
        }
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size == 0 or key in self._seen or key in inputs:  # a view or in-place result
                    continue
                self._seen.add(key)
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._release, key, size)
        return out

    def _release(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Callable[[], int]]:
    """Yield a function returning the peak bytes allocated inside the block beyond those before it.

    CUDA: the caching allocator's peak statistics. CPU: live tensor storages, tracked per op.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = {"peak": 0}
        yield lambda: result["peak"]
        synchronize(device)
        result["peak"] = torch.cuda.max_memory_allocated(device) - before
        return
    tracker = _LiveTensorBytes()
    with tracker:
        yield lambda: tracker.peak


def saved_tensor_bytes(
    fn: Callable[[], torch.Tensor], exclude: Sequence[torch.Tensor] = ()
) -> tuple[int, int]:
    """Bytes of the distinct storages autograd saves while running ``fn()``: (all, beyond ``exclude``).

    Saved tensors are seen through ``torch.autograd.graph.saved_tensors_hooks``; a storage saved
    twice (or as several views) counts once, since it is kept once.
    """
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = fn()
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    del output
    total = sum(saved.values())
    return total, total - sum(size for key, size in saved.items() if key in excluded)


@dataclass
class MemoryRow:
    """Bytes one implementation keeps for backward, and its peak during forward+backward."""

    implementation: str
    saved_bytes: int  # all distinct storages saved for backward (input and parameters included)
    saved_extra_bytes: int  # of those, storages that are neither the input nor a parameter
    peak_bytes: int  # peak allocated during forward+backward beyond what existed before
    input_bytes: int

    @property
    def saved_vs_input(self) -> float:
        return self.saved_bytes / self.input_bytes

    @property
    def peak_vs_input(self) -> float:
        return self.peak_bytes / self.input_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "saved_vs_input": self.saved_vs_input, "peak_vs_input": self.peak_vs_input}


@dataclass
class MemoryResult:
    shape: tuple[int, int]
    dtype: str
    device: str
    peak_method: str
    rows: list[MemoryRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "device": self.device,
            "saved_method": "torch.autograd.graph.saved_tensors_hooks, distinct storages",
            "peak_method": self.peak_method,
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([row.to_dict() for row in self.rows])


def measure_memory(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    shape: tuple[int, int] = MEMORY_SHAPE,
    progress: ProgressCallback = _nothing,
) -> MemoryResult:
    """Saved-for-backward bytes and forward+backward peak of every implementation on one input."""
    impls = implementations(device, extra=("autograd-ops",))
    x, weight, bias, dy = _inputs(shape, dtype, device)
    rows = []
    for done, (name, fn) in enumerate(impls.items()):
        progress(done, len(impls), f"memory: {name}")
        xg, wg, bg = (t.clone().requires_grad_() for t in (x, weight, bias))
        fn(xg, wg, bg)  # compile kernels outside the measurement
        saved, extra = saved_tensor_bytes(functools.partial(fn, xg, wg, bg), exclude=(xg, wg, bg))
        with peak_memory(device) as peak:
            y = fn(xg, wg, bg)
            grads = torch.autograd.grad(y, (xg, wg, bg), dy)
            del y, grads
        rows.append(
            MemoryRow(
                implementation=name,
                saved_bytes=saved,
                saved_extra_bytes=extra,
                peak_bytes=peak(),
                input_bytes=x.numel() * x.element_size(),
            )
        )
    progress(len(impls), len(impls), "memory: done")
    method = (
        "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "live tensor storages tracked per op (TorchDispatchMode)"
    )
    return MemoryResult(shape, str(dtype).removeprefix("torch."), device_name(device), method, rows)


# --------------------------------------------------------------------------------------------------
# Training: the corpus
# --------------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Bytes of text split into training and validation parts."""

    train: torch.Tensor  # uint8
    validation: torch.Tensor  # uint8
    source: str
    files: int

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            "train_bytes": int(self.train.numel()),
            "validation_bytes": int(self.validation.numel()),
        }


def stdlib_files() -> list[Path]:
    """The standard library's own ``.py`` files on this machine, sorted (no site-packages, no tests)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in skip]  # prune: never walk into them
        files += [Path(folder) / name for name in names if name.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_corpus(max_bytes: int = 4_000_000, validation_every: int = 10, seed: int = 0) -> Corpus:
    """Source files of the standard library: a seeded shuffle of the sorted list, read up to ``max_bytes``.

    Every ``validation_every``-th file read goes to validation, the others to training, so the two
    never share a file. The same Python installation always gives the same bytes.
    """
    files = stdlib_files()
    if not files:
        raise DataError(
            f"no standard-library .py files under {sysconfig.get_paths()['stdlib']}; pass --data PATH"
        )
    random.Random(seed).shuffle(files)
    train: list[bytes] = []
    validation: list[bytes] = []
    used = total = 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        (validation if used % validation_every == validation_every - 1 else train).append(data)
        used += 1
        total += len(data)
        if total >= max_bytes:
            break
    root = sysconfig.get_paths()["stdlib"]
    return Corpus(_bytes_tensor(b"".join(train)), _bytes_tensor(b"".join(validation)), f"stdlib {root}", used)


def text_corpus(path: str | Path, validation_fraction: float = 0.1) -> Corpus:
    """Any file as bytes: the last ``validation_fraction`` is validation, the rest training."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; pass an existing text file to --data")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"data file {path} cannot be read ({exc.strerror}); check its permissions") from None
    split = int(len(data) * (1.0 - validation_fraction))
    return Corpus(_bytes_tensor(data[:split]), _bytes_tensor(data[split:]), str(path), 1)


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------------
# Training: the runs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSettings:
    """The small GPT and its schedule; identical for every normalisation."""

    steps: int = 150
    batch: int = 16
    seq_len: int = 64
    d_model: int = 128
    n_heads: int = 2
    n_layers: int = 2
    d_mlp: int = 512
    lr: float = 2e-3
    eval_every: int = 25
    eval_batches: int = 8
    seed: int = 0
    norms: tuple[str, ...] = TRAIN_NORMS

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "seq_len", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training {name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        unknown = [n for n in self.norms if n not in TRAIN_NORMS]
        if unknown or not self.norms:
            raise ConfigError(
                f"unknown norm(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(TRAIN_NORMS)}"
            )
        self.model_config("torch")  # validates the sizes (heads dividing d_model, ...)

    def model_config(self, norm: str) -> ModelConfig:
        return ModelConfig(
            vocab_size=256,  # bytes
            max_seq_len=self.seq_len,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_mlp=self.d_mlp,
            norm=norm,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "norms": list(self.norms)}


@dataclass
class NormRun:
    """One normalisation's training run and what was measured on it."""

    norm: str
    wall_s: float  # training steps only (evaluation excluded)
    steps_per_s: float
    final_val_loss: float  # nats per byte, validation set, eval mode
    perplexity: float  # exp(final_val_loss), per byte
    steps_to_90pct: float  # first step where the smoothed loss has made 90% of its final improvement
    peak_memory_bytes: int
    activation_mean: float  # of the normalisation layers' outputs on a validation batch
    activation_var: float
    loss_std: float  # detrended std of the training loss over the last steps
    train_losses: list[float]
    val_steps: list[int]
    val_losses: list[float]
    grad_steps: list[int]
    grad_norms: dict[str, list[float]]  # "block 0", ... -> gradient norm of that block's parameters
    correlation_before: np.ndarray  # (d, d) hidden-unit correlation at the input of the last block's ln1
    correlation_after: np.ndarray  # ... and at its output
    mean_abs_correlation_before: float
    mean_abs_correlation_after: float

    def summary(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "wall_s": self.wall_s,
            "steps_per_s": self.steps_per_s,
            "final_val_loss": self.final_val_loss,
            "perplexity": self.perplexity,
            "steps_to_90pct": self.steps_to_90pct,
            "peak_memory_bytes": self.peak_memory_bytes,
            "activation_mean": self.activation_mean,
            "activation_var": self.activation_var,
            "loss_std": self.loss_std,
            "mean_abs_correlation_before": self.mean_abs_correlation_before,
            "mean_abs_correlation_after": self.mean_abs_correlation_after,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "train_losses": self.train_losses,
            "val_steps": self.val_steps,
            "val_losses": self.val_losses,
            "grad_steps": self.grad_steps,
            "grad_norms": self.grad_norms,
        }


@dataclass
class TrainingResult:
    settings: TrainingSettings
    corpus: dict[str, Any]
    device: str
    peak_method: str
    runs: list[NormRun]

    def run(self, norm: str) -> NormRun | None:
        return next((r for r in self.runs if r.norm == norm), None)

    def pct_vs_torch(self, norm: str, metric: str) -> float:
        """(norm − torch LayerNorm) / torch LayerNorm × 100 for one summary metric (NaN without torch)."""
        base, run = self.run("torch"), self.run(norm)
        if base is None or run is None:
            return math.nan
        reference, value = float(getattr(base, metric)), float(getattr(run, metric))
        if reference == 0 or not (math.isfinite(reference) and math.isfinite(value)):
            return math.nan
        return 100.0 * (value - reference) / abs(reference)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "corpus": self.corpus,
            "device": self.device,
            "peak_method": self.peak_method,
            "definitions": {
                "steps_to_90pct": "first step at which the trailing moving average of the training loss "
                "(window steps/20) is below first_loss - 0.9 * (first_loss - mean of the last window)",
                "loss_std": "std of the training loss over the last max(10, steps/5) steps after "
                "removing a fitted straight line",
                "activation_mean/var": "mean and variance of all elements of each normalisation layer's "
                "output on one validation batch, averaged over layers",
                "correlation": "Pearson correlation between hidden units over the tokens of one "
                "validation batch, at the input and output of the last block's first norm",
            },
            "runs": [run.to_dict() for run in self.runs],
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([run.summary() for run in self.runs])


class _Batches:
    """The same training windows (seeded) and validation windows (evenly spaced) for every run."""

    def __init__(self, corpus: Corpus, settings: TrainingSettings) -> None:
        span = settings.seq_len + 1
        for part, data in (("training", corpus.train), ("validation", corpus.validation)):
            if data.numel() < span + 1:
                raise DataError(
                    f"the {part} part of {corpus.source} has {data.numel()} bytes, fewer than one "
                    f"window of seq_len + 1 = {span}; use a larger file or a shorter --seq-len"
                )
        generator = torch.Generator().manual_seed(settings.seed)
        self.starts = torch.randint(
            0, corpus.train.numel() - span + 1, (settings.steps, settings.batch), generator=generator
        )
        n_val = settings.eval_batches * settings.batch
        val_starts = torch.linspace(0, corpus.validation.numel() - span, n_val).long()
        self.corpus, self.span, self.settings = corpus, span, settings
        self.validation = [
            self._windows(corpus.validation, chunk)
            for chunk in val_starts.view(settings.eval_batches, settings.batch).unbind(0)
        ]

    def _windows(self, data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = starts[:, None] + torch.arange(self.span)  # (B, S + 1)
        windows = data[offsets].long()
        return windows[:, :-1], windows[:, 1:]  # inputs, next-byte targets

    def train(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(self.corpus.train, self.starts[step])


def _loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)  # (B, S, 256)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def _validation_loss(model: nn.Module, batches: _Batches, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    losses = [float(_loss(model, x.to(device), y.to(device))) for x, y in batches.validation]
    model.train(was_training)
    return float(np.mean(losses))


def _norm_modules(model: Transformer) -> list[nn.Module]:
    """Every normalisation layer: ln1 and ln2 of each block, and ln_final."""
    names = ("ln1", "ln2", "ln_final")
    return [module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in names]


def _block_grad_norms(model: Transformer) -> list[float]:
    norms = []
    for block in model.blocks:
        grads = [p.grad.detach().float().norm() for p in block.parameters() if p.grad is not None]
        norms.append(float(torch.stack(grads).norm()) if grads else math.nan)
    return norms


def _hidden_correlation(values: torch.Tensor) -> np.ndarray:
    """Correlation between hidden units (columns) over tokens (rows); constant units give 0."""
    flat = values.reshape(-1, values.shape[-1]).double().T  # (d, tokens)
    corr = torch.nan_to_num(torch.corrcoef(flat), nan=0.0)
    return corr.cpu().numpy()


def _mean_abs_offdiagonal(corr: np.ndarray) -> float:
    d = corr.shape[0]
    if d < 2:
        return math.nan
    return float((np.abs(corr).sum() - np.abs(np.diag(corr)).sum()) / (d * d - d))


@torch.no_grad()
def _activation_statistics(
    model: Transformer, inputs: torch.Tensor
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean and variance of the norm layers' outputs; hidden correlation around the last ln1."""
    model.eval()
    outputs: list[torch.Tensor] = []
    captured: dict[str, torch.Tensor] = {}

    def keep_output(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        outputs.append(output.float())

    def keep_both(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured.update(before=inputs[0], after=output)

    norms = _norm_modules(model)
    handles = [m.register_forward_hook(keep_output) for m in norms]
    handles.append(norms[-3].register_forward_hook(keep_both))  # the last block's ln1
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    model.train()
    mean = float(np.mean([float(o.mean()) for o in outputs]))
    var = float(np.mean([float(o.var(unbiased=False)) for o in outputs]))
    return mean, var, _hidden_correlation(captured["before"]), _hidden_correlation(captured["after"])


def steps_to_fraction(losses: Sequence[float], fraction: float = 0.9) -> float:
    """First step (1-based) where the trailing moving average has made ``fraction`` of the final improvement.

    Window w = max(1, len/20); first = losses[0]; final = mean of the last w losses. NaN when the
    loss did not improve or is not finite.
    """
    values = np.asarray(losses, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return math.nan
    window = max(1, values.size // 20)
    first, final = values[0], values[-window:].mean()
    if not final < first:
        return math.nan
    threshold = first - fraction * (first - final)
    smoothed = np.convolve(values, np.ones(window) / window, mode="full")[: values.size]
    smoothed[: window - 1] = [values[: i + 1].mean() for i in range(window - 1)]
    below = np.flatnonzero(smoothed <= threshold)
    return float(below[0] + 1) if below.size else math.nan


def detrended_std(losses: Sequence[float]) -> float:
    """Std of the last max(10, len/5) losses around their least-squares line."""
    values = np.asarray(losses, dtype=np.float64)
    tail = values[-max(10, values.size // 5) :]
    if tail.size < 3 or not np.isfinite(tail).all():
        return math.nan
    steps = np.arange(tail.size, dtype=np.float64)
    slope, intercept = np.polyfit(steps, tail, 1)
    return float(np.std(tail - (slope * steps + intercept), ddof=2))


def _training_step_peak(
    model: Transformer, batches: _Batches, settings: TrainingSettings, device: torch.device
) -> int:
    """Peak bytes of one training step (forward, backward, AdamW step) on a copy of the model.

    A first, untracked step on the copy also warms up (kernel compilation, thread pools), so that
    the timed run of every normalisation starts warm.
    """
    twin = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(twin.parameters(), lr=settings.lr)
    x, y = batches.train(0)
    x, y = x.to(device), y.to(device)
    _loss(twin, x, y).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    twin = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(twin.parameters(), lr=settings.lr)
    with peak_memory(device) as peak:
        loss = _loss(twin, x, y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        del loss
    return peak()


class _NormTrainer:
    """One normalisation's model, optimizer and records; advanced one step at a time."""

    def __init__(
        self, norm: str, batches: _Batches, settings: TrainingSettings, device: torch.device
    ) -> None:
        torch.manual_seed(settings.seed)  # every normalisation starts from the same weights
        self.model = Transformer(settings.model_config(norm)).to(device)
        self.model.train()
        self.peak = _training_step_peak(self.model, batches, settings, device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0
        )
        self.norm, self.batches, self.settings, self.device = norm, batches, settings, device
        self.grad_every = max(1, settings.steps // 50)
        self.train_losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        self.grad_steps: list[int] = []
        self.grad_norms: dict[str, list[float]] = {f"block {i}": [] for i in range(settings.n_layers)}
        self.wall_s = 0.0

    def evaluate(self, step: int) -> None:
        self.val_steps.append(step)
        self.val_losses.append(_validation_loss(self.model, self.batches, self.device))

    def step(self, step: int) -> float:
        """One optimizer step on batch ``step`` (evaluating first when due); returns the loss."""
        if step % self.settings.eval_every == 0:
            self.evaluate(step)
        x, y = self.batches.train(step)
        x, y = x.to(self.device), y.to(self.device)
        synchronize(self.device)
        start = time.perf_counter()
        loss = _loss(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if step % self.grad_every == 0:
            self.grad_steps.append(step)
            for i, value in enumerate(_block_grad_norms(self.model)):
                self.grad_norms[f"block {i}"].append(value)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.train_losses.append(loss.item())  # synchronises
        self.wall_s += time.perf_counter() - start
        return self.train_losses[-1]

    def finish(self) -> NormRun:
        """Final validation loss and activation statistics, and the run's summary."""
        self.evaluate(self.settings.steps)
        first_batch = self.batches.validation[0][0].to(self.device)
        mean, var, before, after = _activation_statistics(self.model, first_batch)
        final = self.val_losses[-1]
        return NormRun(
            norm=self.norm,
            wall_s=self.wall_s,
            steps_per_s=self.settings.steps / self.wall_s,
            final_val_loss=final,
            perplexity=math.exp(final) if math.isfinite(final) else math.nan,
            steps_to_90pct=steps_to_fraction(self.train_losses),
            peak_memory_bytes=self.peak,
            activation_mean=mean,
            activation_var=var,
            loss_std=detrended_std(self.train_losses),
            train_losses=self.train_losses,
            val_steps=self.val_steps,
            val_losses=self.val_losses,
            grad_steps=self.grad_steps,
            grad_norms=self.grad_norms,
            correlation_before=before,
            correlation_after=after,
            mean_abs_correlation_before=_mean_abs_offdiagonal(before),
            mean_abs_correlation_after=_mean_abs_offdiagonal(after),
        )


def train_norms(
    device: torch.device,
    settings: TrainingSettings | None = None,
    corpus: Corpus | None = None,
    progress: ProgressCallback = _nothing,
) -> TrainingResult:
    """Train the same small GPT with each normalisation in ``settings.norms`` (same seed and batches).

    The runs advance in lockstep, one step each per round in a rotating order, so that a change in
    the machine's load while training slows every normalisation alike (as ``timing.compare`` does);
    no run uses randomness after initialisation, so lockstep does not change any run's numbers.
    """
    settings = settings or TrainingSettings()
    corpus = corpus if corpus is not None else stdlib_corpus()
    batches = _Batches(corpus, settings)
    trainers = [_NormTrainer(norm, batches, settings, device) for norm in settings.norms]
    total = settings.steps * len(trainers)
    done = 0
    for step in range(settings.steps):
        shift = step % len(trainers)
        for trainer in trainers[shift:] + trainers[:shift]:
            loss = trainer.step(step)
            done += 1
            progress(done, total, f"training step {step + 1}: {NORM_LABELS[trainer.norm]} loss {loss:.3f}")
    runs = [trainer.finish() for trainer in trainers]
    method = (
        "torch.cuda.max_memory_allocated over one training step"
        if device.type == "cuda"
        else "live tensor bytes over one training step (forward, backward, AdamW step)"
    )
    return TrainingResult(settings, corpus.describe(), device_name(device), method, runs)


# --------------------------------------------------------------------------------------------------
# The whole study
# --------------------------------------------------------------------------------------------------


@dataclass
class LayerNormReport:
    """The parts of the study that were run (None for those skipped)."""

    numerics: NumericsResult | None = None
    speed: SpeedResult | None = None
    memory: MemoryResult | None = None
    training: TrainingResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            name: (None if part is None else part.to_dict())
            for name, part in (
                ("numerics", self.numerics),
                ("speed", self.speed),
                ("memory", self.memory),
                ("training", self.training),
            )
        }


def run_layernorm_study(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    *,
    numerics: bool = True,
    speed: bool = True,
    memory: bool = True,
    train: bool = True,
    shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
    speed_backends: Sequence[str] | None = None,
    budget_s: float = 4.0,
    settings: TrainingSettings | None = None,
    corpus: Corpus | None = None,
    progress: ProgressCallback = _nothing,
) -> LayerNormReport:
    """Run the parts asked for, in order: numerics, speed, memory, training."""
    report = LayerNormReport()
    if numerics:
        report.numerics = check_numerics(device, progress=progress)
    if speed:
        report.speed = measure_speed(device, dtype, shapes, speed_backends, budget_s, progress=progress)
    if memory:
        report.memory = measure_memory(device, dtype, progress=progress)
    if train:
        report.training = train_norms(device, settings, corpus, progress=progress)
    return report
