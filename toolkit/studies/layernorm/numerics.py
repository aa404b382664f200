"""Numerics: output and gradients of every implementation against a float64 reference, for
ordinary inputs and for a large mean offset, in float32 and bfloat16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from toolkit.device import device_name
from toolkit.progress import ProgressCallback, no_progress
from toolkit.studies.layernorm.implementations import EPS, implementations, make_inputs

NUMERICS_SHAPE = (512, 1024)
NUMERICS_OFFSETS = (0.0, 1e3, 1e4)
NUMERICS_DTYPES = (torch.float32, torch.bfloat16)

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
    norm: str = "layer"  # "layer" or "rms" (no bias: its grad_bias errors are NaN)

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
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


def reference_rms_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dy: torch.Tensor, eps: float = EPS
) -> tuple[torch.Tensor, ...]:
    """y, dx, dweight in float64 from the textbook RMSNorm formula, differentiated by autograd."""
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, weight))
    y = x64 / torch.sqrt((x64 * x64).mean(dim=-1, keepdim=True) + eps) * w64
    grads = torch.autograd.grad(y, (x64, w64), dy.double())
    return (y.detach(), *grads)


def _errors(value: torch.Tensor | None, reference: torch.Tensor | None) -> tuple[float, float]:
    """(max relative-to-scale error, max absolute error); NaN when ``value`` is not finite or the
    tensor does not exist (an RMSNorm's bias gradient)."""
    if value is None or reference is None:
        return math.nan, math.nan
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
    progress: ProgressCallback = no_progress,
    norm: str = "layer",
) -> NumericsResult:
    """Errors of each implementation's output and gradients against a float64 reference."""
    impls = implementations(device, extra=("one-pass",), norm=norm)
    reference_norm = reference_rms_norm if norm == "rms" else reference_layer_norm
    cases = [(dtype, offset) for dtype in dtypes for offset in offsets]
    rows: list[NumericsRow] = []
    for done, (dtype, offset) in enumerate(cases):
        progress(done, len(cases), f"numerics: {str(dtype).removeprefix('torch.')}, offset {offset:g}")
        x, weight, bias, dy = make_inputs(shape, dtype, device, offset)
        reference = (*reference_norm(x.cpu(), weight.cpu(), bias.cpu(), dy.cpu()), None, None)[:4]
        torch_output: torch.Tensor | None = None
        for name, fn in impls.items():
            xg, wg, bg = (t.clone().requires_grad_() for t in (x, weight, bias))
            y = fn(xg, wg, bg)
            grads = torch.autograd.grad(y, (xg, wg, bg), dy, allow_unused=True)
            if name == "torch":
                torch_output = y.detach()
            assert torch_output is not None
            errors = [
                _errors(None if t is None else t.cpu(), ref)
                for t, ref in zip((y, *grads), reference, strict=True)
            ]
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
    return NumericsResult(shape=shape, eps=EPS, device=device_name(device), rows=rows, norm=norm)
