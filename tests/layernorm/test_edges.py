"""Exact numerics at the edges, on every backend and dtype, against float64 math written here.

One-element rows normalise to exactly 0 (the output is the bias) with exactly zero input and weight
gradients; zero-size inputs give empty results and zero parameter gradients; negative and large
eps agree with float64 (and with PyTorch where the variance plus eps is negative: NaN). The numba
kernels' row chunks (one row, rows fewer than chunks, many rows; serial and on the thread pool), where
each row's first pass runs inside the previous row's last, give float64 results for every subset of
gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from strategies import CPU_BACKENDS

from toolkit.layernorm import available_backends, layer_norm, rms_norm

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 2e-5, torch.float64: 1e-12}
CUDA = torch.cuda.is_available()
BACKEND_DEVICES = [(backend, "cpu") for backend in CPU_BACKENDS] + [
    pytest.param(
        backend,
        "cuda",
        marks=pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU; none is visible on this machine"),
    )
    for backend in (available_backends("cuda") if CUDA else ["torch-ops", "triton"])
]


def reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, dy: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Output and the gradients of x, weight, bias by float64 autograd of the textbook formula."""
    x64, w64, b64 = (t.detach().double().cpu().requires_grad_() for t in (x, weight, bias))
    mean = x64.mean(dim=-1, keepdim=True)
    variance = ((x64 - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (x64 - mean) / torch.sqrt(variance + eps) * w64 + b64
    y.backward(dy.double().cpu())
    return y.detach(), x64.grad, w64.grad, b64.grad


def run(
    backend: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, dy: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    y = layer_norm(x, x.shape[-1], weight, bias, eps, backend=backend)
    y.backward(dy)
    return y.detach(), x.grad, weight.grad, bias.grad


def inputs(
    shape: tuple[int, ...], dtype: torch.dtype, device: str, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    x, dy = (torch.randn(shape, generator=generator) * 3 + 1 for _ in range(2))
    weight, bias = (torch.randn(shape[-1:], generator=generator) for _ in range(2))
    return tuple(t.to(device, dtype) for t in (x, weight, bias, dy))


@pytest.mark.parametrize(("backend", "device"), BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 1), (2, 3, 1)])
def test_one_element_rows_normalise_to_exactly_zero_with_zero_gradient(
    backend: str, device: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    for seed in range(20):  # FMA rounding left 5e-5 in the input gradient for some values
        x, weight, bias, dy = inputs(shape, dtype, device, seed)
        y, dx, dweight, dbias = run(backend, x, weight, bias, 1e-5, dy)
        assert torch.equal(y, bias.expand_as(y)), "x - mean(x) is exactly 0 for one element"
        assert torch.equal(dx, torch.zeros_like(dx))
        assert torch.equal(dweight, torch.zeros_like(dweight))
        expected_dbias = dy.double().reshape(-1, 1).sum(dim=0)
        torch.testing.assert_close(dbias.double().cpu(), expected_dbias.cpu(), rtol=TOLERANCE[dtype], atol=0)


@pytest.mark.parametrize(("backend", "device"), BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 5)])
def test_zero_size_inputs_give_empty_results_and_zero_parameter_gradients(
    backend: str, device: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    x, weight, bias, dy = inputs(shape, dtype, device)
    y, dx, dweight, dbias = run(backend, x, weight, bias, 1e-5, dy)
    assert y.shape == shape
    assert dx.shape == shape
    assert torch.equal(dweight, torch.zeros_like(dweight))
    assert torch.equal(dbias, torch.zeros_like(dbias))
    assert y.shape == F.layer_norm(x, (5,), weight, bias).shape


@pytest.mark.parametrize(("backend", "device"), BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [-1e-3, 0.0, 1e3, 1e6])
def test_negative_zero_and_large_eps_match_float64(
    backend: str, device: str, dtype: torch.dtype, eps: float
) -> None:
    x, weight, bias, dy = inputs((6, 33), dtype, device)
    ours = run(backend, x, weight, bias, eps, dy)
    exact = reference(x, weight, bias, eps, dy)
    for name, got, want in zip(("y", "dx", "dweight", "dbias"), ours, exact, strict=True):
        scale = float(want.abs().max()) or 1.0
        error = float((got.double().cpu() - want).abs().max()) / scale
        assert error <= TOLERANCE[dtype], f"{name}: relative error {error:.2e} in {dtype}, eps {eps}"


@pytest.mark.parametrize(("backend", "device"), BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_eps_beyond_the_variance_gives_nan_like_pytorch(
    backend: str, device: str, dtype: torch.dtype
) -> None:
    """Constant rows have variance 0: rsqrt(0 - 1e-3) is NaN in float64 math and in PyTorch."""
    x = torch.full((3, 8), 2.5, dtype=dtype, device=device)
    weight, bias = torch.ones(8, dtype=dtype, device=device), torch.zeros(8, dtype=dtype, device=device)
    y = layer_norm(x, 8, weight, bias, -1e-3, backend=backend)
    assert torch.isnan(F.layer_norm(x.double(), (8,), eps=-1e-3)).all()
    assert torch.isnan(y).all()


def rms_reference(
    x: torch.Tensor, weight: torch.Tensor, eps: float, dy: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """RMSNorm's output and the gradients of x and weight by float64 autograd of the textbook formula."""
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, weight))
    y = x64 / torch.sqrt((x64**2).mean(dim=-1, keepdim=True) + eps) * w64
    y.backward(dy.double())
    return y.detach(), x64.grad, w64.grad


@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize(
    ("rows", "row_size"), [(1, 70_000), (9, 8192), (700, 300), (1, 40), (9, 40), (300, 40)]
)
@pytest.mark.parametrize("grads", ["x", "weight", "x+weight"])
def test_numba_row_chunks_match_float64(norm: str, rows: int, row_size: int, grads: str) -> None:
    """The first three shapes run on the thread pool (at least 2**16 elements), the others serially;
    9 rows make more chunks than rows on two threads, some of them empty."""
    x, weight, bias, dy = inputs((rows, row_size), torch.float64, "cpu", seed=rows)
    needed = grads.split("+")
    x = x.detach().clone().requires_grad_("x" in needed)
    weight = weight.detach().clone().requires_grad_("weight" in needed)
    if norm == "layer":
        y = layer_norm(x, row_size, weight, bias, 1e-5, backend="numba")
        exact_y, exact_dx, exact_dweight, _ = reference(x, weight, bias, 1e-5, dy)
    else:
        y = rms_norm(x, row_size, weight, 1e-5, backend="numba")
        exact_y, exact_dx, exact_dweight = rms_reference(x, weight, 1e-5, dy)
    ours = torch.autograd.grad(y, [t for t in (x, weight) if t.requires_grad], dy)
    exact = [g for g, t in ((exact_dx, x), (exact_dweight, weight)) if t.requires_grad]
    torch.testing.assert_close(y.detach(), exact_y, rtol=1e-12, atol=1e-12)
    for got, want in zip(ours, exact, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
