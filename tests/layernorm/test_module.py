"""The custom LayerNorm against torch.nn.LayerNorm and float64 math, on every backend (Hypothesis)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from strategies import CPU_BACKENDS, layer_norm_cases
from tiny import TINY

from toolkit import ModelConfig, Transformer
from toolkit.errors import BackendError, ConfigError, InputError
from toolkit.layernorm import BACKENDS, LayerNorm, available_backends, layer_norm, resolve_backend, rms_norm
from toolkit.memory import saved_tensor_bytes
from toolkit.studies.layernorm import reference_layer_norm

HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def test_numba_backend_is_available_and_chosen_on_cpu() -> None:
    """numba is installed with the package, so auto picks the fast CPU kernel."""
    assert CPU_BACKENDS == ["torch-ops", "numba"]
    assert resolve_backend("auto", torch.device("cpu")) == "numba"


@pytest.fixture(scope="module", autouse=True)
def _compile_kernels() -> None:
    """Compile (or load from cache) the numba kernels once, outside Hypothesis' timing."""
    for dtype in (torch.float32, torch.float64):
        for rows in (4, 1024):
            x = torch.randn(rows, 64, dtype=dtype, requires_grad=True)
            layer_norm(x, 64, backend="numba").sum().backward()


def _modules(case: dict[str, Any]) -> tuple[torch.nn.LayerNorm, LayerNorm]:
    """torch's LayerNorm and ours with the same random gains and biases."""
    kwargs = {"elementwise_affine": case["affine"], "bias": case["bias"], "dtype": case["dtype"]}
    theirs = torch.nn.LayerNorm(case["normalized"], **kwargs)
    ours = LayerNorm(case["normalized"], backend=case["backend"], **kwargs)
    generator = torch.Generator().manual_seed(case["seed"] + 1)
    with torch.no_grad():
        for param in theirs.parameters():
            param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=generator, dtype=torch.float64))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _input(case: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(case["seed"])
    x = case["offset"] + case["scale"] * torch.randn(case["shape"], generator=generator, dtype=torch.float64)
    dy = torch.randn(case["shape"], generator=generator, dtype=torch.float64)
    return x.to(case["dtype"]), dy.to(case["dtype"])


def _float64_reference(
    module: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor, normalized: tuple[int, ...]
) -> list[torch.Tensor]:
    """Output and gradients from textbook float64 formulas on the same (rounded) inputs and parameters."""
    n = math.prod(normalized)
    x2 = x.double().reshape(-1, n)
    weight = (
        module.weight.double().reshape(n) if module.weight is not None else torch.ones(n, dtype=torch.float64)
    )
    bias = module.bias.double().reshape(n) if module.bias is not None else torch.zeros(n, dtype=torch.float64)
    eps = float(module.eps)  # type: ignore[arg-type]
    y, dx, dw, db = reference_layer_norm(x2, weight, bias, dy.double().reshape(-1, n), eps=eps)
    return [y.reshape(x.shape), dx.reshape(x.shape), dw, db]


def _run(module: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor) -> list[torch.Tensor]:
    xg = x.clone().requires_grad_()
    y = module(xg)
    params = [p for p in (module.weight, module.bias) if p is not None]
    grads = torch.autograd.grad(y, [xg, *params], dy)
    return [y.detach(), *(g.detach() for g in grads)]


def _rounding_floor(reference: torch.Tensor, eps: float, condition: float) -> float:
    """A few units of rounding of a well-computed result: 4 eps, amplified by the data's |x| / std."""
    return 4 * eps * condition * max(float(reference.abs().max()) if reference.numel() else 0.0, 1.0)


def _error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double().reshape(reference.shape) - reference).abs().max()) if value.numel() else 0.0


# --------------------------------------------------------------------------------------------
# Equal to torch.nn.LayerNorm
# --------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(case=layer_norm_cases())
def test_as_accurate_as_torch_against_float64(case: dict[str, Any]) -> None:
    """Output, input, weight and bias gradients are at least as close to float64 math as torch's."""
    theirs, ours = _modules(case)
    x, dy = _input(case)
    reference = _float64_reference(theirs, x, dy, case["normalized"])
    if not theirs.elementwise_affine:
        reference = reference[:2]
    elif theirs.bias is None:
        reference = reference[:3]
    torch_values, our_values = _run(theirs, x, dy), _run(ours, x, dy)
    eps = torch.finfo(case["dtype"]).eps
    condition = 1.0 + abs(case["offset"]) / case["scale"]  # |x| / std: how much rounding the data amplifies
    for name, ref, t, o in zip(
        ("y", "dx", "dweight", "dbias"), reference, torch_values, our_values, strict=False
    ):
        assert o.dtype == t.dtype, name
        assert o.shape == t.shape, name
        assert _error(o, ref) <= 2 * _error(t, ref) + _rounding_floor(ref, eps, condition), name


@HYPOTHESIS
@given(case=layer_norm_cases().filter(lambda c: c["offset"] == 0.0 and c["dtype"] != torch.bfloat16))
def test_close_to_torch_on_ordinary_inputs(case: dict[str, Any]) -> None:
    """On zero-mean inputs the output and gradients equal torch's to rounding (assert_close defaults)."""
    theirs, ours = _modules(case)
    x, dy = _input(case)
    for t, o in zip(_run(theirs, x, dy), _run(ours, x, dy), strict=True):
        scale = float(t.abs().max()) if t.numel() else 1.0
        torch.testing.assert_close(o, t, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("normalized", [(7,), (3, 4)])
def test_gradcheck_float64(backend: str, unbiased: bool, normalized: tuple[int, ...]) -> None:
    """The hand-derived backward equals finite differences (torch.autograd.gradcheck, float64)."""
    x = torch.randn(5, *normalized, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(normalized, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(normalized, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, normalized, weight, bias, 1e-5, unbiased=unbiased, backend=backend)

    assert torch.autograd.gradcheck(fn, (x, weight, bias))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_without_affine_and_partial_grads(backend: str) -> None:
    """No weight/bias, and only some inputs requiring grad, still differentiate correctly."""
    x = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer_norm(x, 9, backend=backend), (x,))
    weight = torch.randn(9, dtype=torch.float64, requires_grad=True)
    frozen_x = x.detach()
    assert torch.autograd.gradcheck(lambda w: layer_norm(frozen_x, 9, w, None, backend=backend), (weight,))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_a_second_derivative_is_refused(backend: str, norm: str) -> None:
    """The backward (every backend's) is not itself differentiable: a gradient of the gradient raises
    instead of coming out silently wrong, and a first derivative under create_graph is still right."""
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, dtype=torch.float64, requires_grad=True)
    if norm == "layer":
        y, exact = layer_norm(x, 8, weight, backend=backend), F.layer_norm(x, (8,), weight)
    else:
        y, exact = rms_norm(x, 8, weight, 1e-6, backend=backend), F.rms_norm(x, (8,), weight, 1e-6)
    # dy = y, itself differentiable (as in a gradient penalty): the case a silent zero would corrupt
    (dx,) = torch.autograd.grad((y**2).sum() / 2, x, create_graph=True)
    (want,) = torch.autograd.grad((exact**2).sum() / 2, x)
    torch.testing.assert_close(dx.detach(), want)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        dx.sum().backward()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unbiased_variance_matches_its_definition(backend: str) -> None:
    """unbiased=True divides the variance by N - 1 (not PyTorch's semantics, but some texts')."""
    x = torch.randn(4, 10, dtype=torch.float64) * 3 + 2
    weight, bias = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=True, keepdim=True) + 1e-5)
    ours = layer_norm(x, 10, weight, bias, 1e-5, unbiased=True, backend=backend)
    torch.testing.assert_close(ours, expected * weight + bias, rtol=1e-12, atol=1e-12)
    biased = layer_norm(x, 10, weight, bias, 1e-5, backend=backend)
    assert not torch.allclose(ours, biased)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_large_offset_keeps_float32_accuracy(backend: str) -> None:
    """x = 1e4 + N(0,1) in float32: two-pass statistics stay within float32's reach, like torch's.

    The one-pass E[x²] − E[x]² in float32 loses the variance entirely at this offset.
    """
    x = (1e4 + torch.randn(64, 1024, dtype=torch.float64)).float()
    x64 = x.double()
    variance = x64.var(-1, unbiased=False, keepdim=True)
    reference = (x64 - x64.mean(-1, keepdim=True)) / torch.sqrt(variance + 1e-5)
    ours = float((layer_norm(x, 1024, backend=backend).double() - reference).abs().max())
    theirs = float((F.layer_norm(x, (1024,)).double() - reference).abs().max())
    assert ours <= 2 * theirs
    assert ours < 4 * torch.finfo(torch.float32).eps * 1e4  # a few float32 ulps of the offset, over std 1
    one_pass = (x * x).mean(-1, keepdim=True) - x.mean(-1, keepdim=True) ** 2
    assert float((one_pass.double() - variance).abs().max()) > 1.0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_finite_inputs_propagate(backend: str) -> None:
    """A NaN or inf in a row makes that row's output NaN, as torch's does; other rows are untouched."""
    x = torch.randn(3, 16)
    x[1, 4] = math.nan
    x[2, 0] = math.inf
    ours, theirs = layer_norm(x, 16, backend=backend), F.layer_norm(x, (16,))
    assert torch.equal(ours.isnan(), theirs.isnan())
    assert bool(ours[1:].isnan().all())
    assert bool(torch.isfinite(ours[0]).all())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_batch_and_non_contiguous_input(backend: str) -> None:
    """Zero rows give an empty output and zero parameter gradients; a transposed input works."""
    weight = torch.randn(8, requires_grad=True)
    empty = torch.empty(0, 8, requires_grad=True)
    out = layer_norm(empty, 8, weight, None, backend=backend)
    assert out.shape == (0, 8)
    (grad,) = torch.autograd.grad(out.sum(), weight)
    assert torch.equal(grad, torch.zeros(8))
    x = torch.randn(8, 5).T  # (5, 8), not contiguous
    torch.testing.assert_close(layer_norm(x, 8, backend=backend), F.layer_norm(x, (8,)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("rows", [3, 700])  # the serial path and the multi-threaded path
def test_parameter_gradients_reduce_over_all_rows(backend: str, rows: int) -> None:
    """dweight and dbias sum over every row (chunked partials included) like torch's, in float64."""
    x = torch.randn(rows, 300, dtype=torch.float64)
    dy = torch.randn(rows, 300, dtype=torch.float64)
    weight = torch.randn(300, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(300, dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(layer_norm(x, 300, weight, bias, backend=backend), (weight, bias), dy)
    theirs = torch.autograd.grad(F.layer_norm(x, (300,), weight, bias), (weight, bias), dy)
    for o, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(o, t, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------
# The module: a drop-in
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("affine", "bias"), [(True, True), (True, False), (False, True)])
def test_state_dict_and_parameters_match_torch(affine: bool, bias: bool) -> None:
    """Same parameter names, shapes, dtypes and initial values; state dicts load both ways."""
    theirs = torch.nn.LayerNorm((4, 6), eps=1e-6, elementwise_affine=affine, bias=bias, dtype=torch.float64)
    ours = LayerNorm((4, 6), eps=1e-6, elementwise_affine=affine, bias=bias, dtype=torch.float64)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, o), (_, t) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert o.dtype == t.dtype, name
        assert torch.equal(o, t), name
    assert (ours.weight is None) == (theirs.weight is None)
    assert (ours.bias is None) == (theirs.bias is None)
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    assert ours.normalized_shape == theirs.normalized_shape
    assert ours.eps == theirs.eps


def test_unknown_backend_and_bad_shapes_are_refused() -> None:
    """Typed errors that say what is wrong: backend name, input shape, parameter shape, N=1 unbiased."""
    with pytest.raises(ConfigError, match="valid values"):
        LayerNorm(8, backend="cuda-magic")
    with pytest.raises(InputError, match=r"expects input of shape \[\*, 8\]"):
        LayerNorm(8)(torch.randn(3, 7))
    with pytest.raises(InputError, match="weight must have shape"):
        layer_norm(torch.randn(3, 8), 8, torch.ones(7))
    with pytest.raises(ConfigError, match="N - 1"):
        LayerNorm(1, unbiased=True)
    with pytest.raises(ConfigError, match="positive integers"):
        LayerNorm(0)
    with pytest.raises(InputError, match="floating-point"):
        LayerNorm(4)(torch.ones(2, 4, dtype=torch.long))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_triton_backend_without_cuda_is_refused() -> None:
    """Asking for triton on CPU tensors is a BackendError naming the fix; auto never picks it."""
    assert set(available_backends("cpu")) <= set(BACKENDS)
    assert "triton" not in available_backends("cpu")
    with pytest.raises(BackendError, match="runs on CUDA"):
        layer_norm(torch.randn(2, 4), 4, backend="triton")


def test_saved_bytes_no_more_than_torch() -> None:
    """The backward keeps x, mean, rstd (and the weight): no more bytes than torch's own LayerNorm."""
    x = torch.randn(512, 256, requires_grad=True)
    weight, bias = torch.ones(256, requires_grad=True), torch.zeros(256, requires_grad=True)
    torch_total, torch_extra = saved_tensor_bytes(
        lambda: F.layer_norm(x, (256,), weight, bias), (x, weight, bias)
    )
    for backend in CPU_BACKENDS:
        total, extra = saved_tensor_bytes(
            lambda b=backend: layer_norm(x, 256, weight, bias, backend=b), (x, weight, bias)
        )
        assert total <= torch_total
        assert extra <= torch_extra
        assert extra == 2 * 512 * 4  # mean and rstd, float32, one per row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_custom_norm_model_equals_torch_norm_model(dtype: torch.dtype) -> None:
    """A Transformer with norm="custom" and the same weights gives the same logits and gradients."""
    config = TINY
    torch_model = Transformer(config).to(dtype)
    custom_model = Transformer(config.replace(norm="custom")).to(dtype)
    custom_model.load_state_dict(torch_model.state_dict())
    assert isinstance(custom_model.ln_final, LayerNorm)
    ids = torch.randint(0, config.vocab_size, (3, 32))
    theirs, ours = torch_model(ids), custom_model(ids)
    tolerance = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(ours, theirs, **tolerance)
    theirs.float().square().mean().backward()
    ours.float().square().mean().backward()
    for (name, t), o in zip(torch_model.named_parameters(), custom_model.parameters(), strict=True):
        assert t.grad is not None
        assert o.grad is not None
        scale = max(float(t.grad.abs().max()), 1e-6)
        assert float((o.grad - t.grad).abs().max()) <= (0.05 if dtype == torch.bfloat16 else 1e-4) * scale, (
            name
        )


@pytest.mark.parametrize("norm", ["rms", "none", "batch"])
def test_other_norm_variants_build_and_run(norm: str) -> None:
    """The training study's alternatives: RMSNorm, no normalisation, BatchNorm over features."""
    config = ModelConfig(
        vocab_size=61, max_seq_len=16, d_model=24, n_heads=3, n_layers=1, d_mlp=40, norm=norm
    )
    model = Transformer(config).eval()
    ids = torch.randint(0, 61, (2, 16))
    logits = model(ids)
    assert logits.shape == (2, 16, 61)
    assert bool(torch.isfinite(logits).all())
    # Each norm computes its own definition on the residual stream, checked in float64.
    norm_layer = model.blocks[0].ln1
    x = torch.randn(2, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        y = norm_layer.double()(x)
    if norm == "none":
        expected = x
    elif norm == "rms":
        expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + config.norm_eps)
    else:  # BatchNorm over features in eval mode: running mean 0, running variance 1
        expected = x / math.sqrt(1.0 + config.norm_eps)
    torch.testing.assert_close(y, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1), (37, 100), (4096, 256), (64, 4096), (3, 16384)])
def test_triton_matches_torch_on_cuda(dtype: torch.dtype, shape: tuple[int, int]) -> None:
    """The Triton kernels (auto's choice on CUDA) agree with torch's LayerNorm on the GPU."""
    assert resolve_backend("auto", torch.device("cuda"), shape[1]) == "triton"
    generator = torch.Generator().manual_seed(0)
    x = (5 + torch.randn(shape, generator=generator)).to("cuda", dtype)
    dy = torch.randn(shape, generator=generator).to("cuda", dtype)
    theirs, ours = (
        torch.nn.LayerNorm(shape[1], device="cuda", dtype=dtype),
        LayerNorm(shape[1], device="cuda", dtype=dtype, backend="triton"),
    )
    with torch.no_grad():
        theirs.weight.normal_(1.0, 0.3)
        theirs.bias.normal_(0.0, 0.3)
    ours.load_state_dict(theirs.state_dict())
    case = {"normalized": (shape[1],)}
    reference = _float64_reference(theirs, x.cpu(), dy.cpu(), case["normalized"])
    eps = torch.finfo(dtype).eps
    for name, ref, t, o in zip(
        ("y", "dx", "dweight", "dbias"), reference, _run(theirs, x, dy), _run(ours, x, dy), strict=True
    ):
        assert o.dtype == t.dtype, name
        assert o.shape == t.shape, name
        assert _error(o.cpu(), ref) <= 2 * _error(t.cpu(), ref) + _rounding_floor(ref, eps, 6.0), name


@pytest.mark.cuda
def test_triton_gradcheck_and_unbiased_on_cuda() -> None:
    """float32 Triton gradients against float64 autograd; unbiased variance on the GPU."""
    x = torch.randn(33, 300, device="cuda")
    weight = torch.randn(300, device="cuda", requires_grad=True)
    bias = torch.randn(300, device="cuda", requires_grad=True)
    dy = torch.randn(33, 300, device="cuda")
    for unbiased in (False, True):
        xg = x.clone().requires_grad_()
        out = layer_norm(xg, 300, weight, bias, unbiased=unbiased, backend="triton")
        grads = torch.autograd.grad(out, (xg, weight, bias), dy)
        x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, weight, bias))
        variance = x64.var(-1, unbiased=unbiased, keepdim=True)
        expected = (x64 - x64.mean(-1, keepdim=True)) / torch.sqrt(variance + 1e-5) * w64 + b64
        expected_grads = torch.autograd.grad(expected, (x64, w64, b64), dy.double())
        torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g.double(), e, rtol=1e-3, atol=1e-3)
