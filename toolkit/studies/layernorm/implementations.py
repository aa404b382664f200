"""The LayerNorm and RMSNorm implementations the study compares, and the inputs it gives them.

Every implementation takes (x, weight, bias); the RMSNorms ignore the bias (they have none), so the
study's parts run both norms through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from toolkit.layernorm import available_backends, layer_norm, rms_norm

LayerNormFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

EPS = 1e-5
NORM_KINDS = ("layer", "rms")
"""The norms the numerics, speed and memory parts study: LayerNorm, or RMSNorm."""


def torch_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), weight, bias, EPS)


def custom_layer_norm(backend: str) -> LayerNormFn:
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


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, EPS)


def custom_rms_norm(backend: str) -> LayerNormFn:
    def run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, x.shape[-1], weight, EPS, backend=backend)

    return run


def autograd_rms_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """transformers' LlamaRMSNorm chain (float32 square, mean, rsqrt, product, cast back, times the
    weight), differentiated by autograd."""
    xc = x.float()
    return weight * (xc * torch.rsqrt(xc.square().mean(dim=-1, keepdim=True) + EPS)).to(x.dtype)


def implementations(
    device: torch.device, extra: Sequence[str] = (), norm: str = "layer"
) -> dict[str, LayerNormFn]:
    """torch's norm and the custom one on every backend available on ``device``, then ``extra``.

    ``norm``: ``layer`` (LayerNorm) or ``rms`` (RMSNorm). ``extra`` may name ``autograd-ops`` (plain
    ops, autograd's backward), ``one-pass`` (LayerNorm only) and ``torch-layernorm`` (torch's
    LayerNorm beside the RMSNorms, for scale).
    """
    rms = norm == "rms"
    impls: dict[str, LayerNormFn] = {"torch": torch_rms_norm if rms else torch_layer_norm}
    for backend in available_backends(device):
        impls[f"custom-{backend}"] = custom_rms_norm(backend) if rms else custom_layer_norm(backend)
    extras = {
        "autograd-ops": autograd_rms_norm if rms else autograd_layer_norm,
        "one-pass": one_pass_layer_norm,
        "torch-layernorm": torch_layer_norm,
    }
    for name in extra:
        if rms and name == "one-pass":  # an RMSNorm has no variance to take in one pass
            continue
        if not rms and name == "torch-layernorm":  # torch's LayerNorm is "torch" already
            continue
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
RMS_IMPLEMENTATION_LABELS = {
    "torch": "torch.nn.RMSNorm",
    "custom-torch-ops": "custom RMSNorm, torch-ops",
    "custom-numba": "custom RMSNorm, numba",
    "custom-triton": "custom RMSNorm, triton",
    "autograd-ops": "LlamaRMSNorm's ops + autograd",
    "torch-layernorm": "torch.nn.LayerNorm",
    "copy": "copy (x → y)",
}


def implementation_label(name: str, norm: str = "layer") -> str:
    """The long label of an implementation of ``norm``."""
    labels = RMS_IMPLEMENTATION_LABELS if norm == "rms" else IMPLEMENTATION_LABELS
    return labels.get(name, name)


def make_inputs(
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
