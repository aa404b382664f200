"""The custom RMSNorm against torch.nn.RMSNorm and float64 math, on every CPU backend: Hypothesis cases,
PyTorch's own OpInfo and ModuleInfo samples for rms_norm, edges, and the model that uses it."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from strategies import CPU_BACKENDS, rms_norm_cases
from tiny import TINY

from toolkit import Transformer
from toolkit.errors import ConfigError, InputError
from toolkit.layernorm import RMSNorm, rms_norm
from toolkit.memory import saved_tensor_bytes

HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@pytest.fixture(scope="module", autouse=True)
def _compile_kernels() -> None:
    """Compile (or load from cache) the numba kernels once, outside Hypothesis' timing."""
    for dtype in (torch.float32, torch.float64):
        for rows in (4, 1024):
            x = torch.randn(rows, 64, dtype=dtype, requires_grad=True)
            rms_norm(x, 64, torch.ones(64, dtype=dtype, requires_grad=True), backend="numba").sum().backward()


def _float64_reference(
    x: torch.Tensor, weight: torch.Tensor | None, dy: torch.Tensor, normalized: tuple[int, ...], eps: float
) -> list[torch.Tensor]:
    """y, dx, dweight by the textbook formulas in float64, on the same (rounded) inputs."""
    n = math.prod(normalized)
    x2, dy2 = x.double().reshape(-1, n), dy.double().reshape(-1, n)
    w = weight.double().reshape(n) if weight is not None else torch.ones(n, dtype=torch.float64)
    rstd = 1.0 / torch.sqrt((x2 * x2).mean(dim=1, keepdim=True) + eps)
    xhat = x2 * rstd
    g = dy2 * w
    dx = rstd * (g - xhat * (g * xhat).mean(dim=1, keepdim=True))
    values = [(xhat * w).reshape(x.shape), dx.reshape(x.shape)]
    return [*values, (dy2 * xhat).sum(dim=0).reshape(normalized)] if weight is not None else values


def _run(fn: Any, x: torch.Tensor, weight: torch.Tensor | None, dy: torch.Tensor) -> list[torch.Tensor]:
    xg = x.clone().requires_grad_()
    wg = None if weight is None else weight.clone().requires_grad_()
    y = fn(xg, wg)
    grads = torch.autograd.grad(y, [xg] if wg is None else [xg, wg], dy)
    return [y.detach(), *(g.detach() for g in grads)]


def _error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double().reshape(reference.shape) - reference).abs().max()) if value.numel() else 0.0


def _case_tensors(case: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    generator = torch.Generator().manual_seed(case["seed"])
    shape, dtype = case["shape"], case["dtype"]
    x = case["offset"] + case["scale"] * torch.randn(shape, generator=generator, dtype=torch.float64)
    dy = torch.randn(shape, generator=generator, dtype=torch.float64)
    weight = None
    if case["affine"]:
        weight = (1.0 + 0.3 * torch.randn(case["normalized"], generator=generator, dtype=torch.float64)).to(
            dtype
        )
    return x.to(dtype), weight, dy.to(dtype)


@HYPOTHESIS
@given(case=rms_norm_cases())
def test_as_accurate_as_torch_against_float64(case: dict[str, Any]) -> None:
    """Output, input and weight gradients are at least as close to float64 math as torch's own."""
    x, weight, dy = _case_tensors(case)
    normalized, eps = case["normalized"], case["eps"]
    eps_value = float(torch.finfo(x.dtype).eps) if eps is None else eps
    reference = _float64_reference(x, weight, dy, normalized, eps_value)
    theirs = _run(lambda a, w: F.rms_norm(a, normalized, w, eps), x, weight, dy)
    ours = _run(lambda a, w: rms_norm(a, normalized, w, eps, backend=case["backend"]), x, weight, dy)
    unit = torch.finfo(case["dtype"]).eps
    for name, ref, t, o in zip(("y", "dx", "dweight"), reference, theirs, ours, strict=False):
        assert o.dtype == t.dtype, name
        assert o.shape == t.shape, name
        floor = 4 * unit * max(float(ref.abs().max()) if ref.numel() else 0.0, 1.0)
        assert _error(o, ref) <= 2 * _error(t, ref) + floor, name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("normalized", [(7,), (3, 4)])
def test_gradcheck_float64(backend: str, normalized: tuple[int, ...]) -> None:
    """The hand-derived backward equals finite differences (torch.autograd.gradcheck, float64)."""
    x = torch.randn(5, *normalized, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(normalized, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: rms_norm(x, normalized, w, 1e-5, backend=backend), (x, weight)
    )
    frozen = x.detach()
    assert torch.autograd.gradcheck(
        lambda w: rms_norm(frozen, normalized, w, 1e-5, backend=backend), (weight,)
    )
    assert torch.autograd.gradcheck(lambda x: rms_norm(x, normalized, None, 1e-5, backend=backend), (x,))


def _torch_samples() -> list[tuple[str, Any]]:
    """PyTorch's own test inputs: the rms_norm OpInfo samples and the nn.RMSNorm ModuleInfo inputs."""
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.common_modules import module_db

    (op,) = [op for op in op_db if op.name == "nn.functional.rms_norm"]
    (module,) = [m for m in module_db if m.module_cls is torch.nn.RMSNorm]
    samples: list[tuple[str, Any]] = []
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        samples += [("op", s) for s in op.sample_inputs("cpu", dtype, requires_grad=True)]
        inputs = module.module_inputs_func(
            module, device="cpu", dtype=dtype, requires_grad=True, training=True
        )
        samples += [("module", (dtype, m)) for m in inputs]
    return samples


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_pytorch_opinfo_and_moduleinfo_samples(backend: str) -> None:
    """Every OpInfo sample of torch.nn.functional.rms_norm and every ModuleInfo input of nn.RMSNorm
    (shapes, eps including a negative one, no weight, zero rows, four dtypes) gives torch's output
    and gradients, NaNs in the same places."""
    checked = 0
    for kind, sample in _torch_samples():
        if kind == "op":
            x, (normalized, *rest), kwargs = sample.input, sample.args, sample.kwargs
            weight = rest[0] if rest else None
            eps = kwargs.get("eps")
            theirs_fn = lambda a, w, n=normalized, e=eps: F.rms_norm(a, n, w, e)  # noqa: E731
            ours_fn = lambda a, w, n=normalized, e=eps: rms_norm(a, n, w, e, backend=backend)  # noqa: E731
        else:
            dtype, module_input = sample
            reference = torch.nn.RMSNorm(*module_input.constructor_input.args, dtype=dtype)
            ours_module = RMSNorm(*module_input.constructor_input.args, dtype=dtype, backend=backend)
            ours_module.load_state_dict(reference.state_dict())
            (x,) = module_input.forward_input.args
            weight = reference.weight
            theirs_fn = lambda a, w, m=reference: F.rms_norm(a, m.normalized_shape, w, m.eps)  # noqa: E731
            ours_fn = lambda a, w, m=ours_module: rms_norm(a, m.normalized_shape, w, m.eps, backend=backend)  # noqa: E731
        x = x.detach()
        weight = None if weight is None else weight.detach()
        dy = torch.randn_like(x)
        for t, o in zip(_run(theirs_fn, x, weight, dy), _run(ours_fn, x, weight, dy), strict=True):
            torch.testing.assert_close(o, t, equal_nan=True)
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_element_rows_and_zero_size_inputs(backend: str, dtype: torch.dtype) -> None:
    """A one-element row is x / sqrt(x² + eps) · w (sign times nearly w), with float64's gradients;
    zero rows give an empty output and a zero weight gradient."""
    x = torch.tensor([[3.0], [-0.5], [0.0]], dtype=dtype)
    weight = torch.tensor([2.0], dtype=dtype)
    dy = torch.ones_like(x)
    reference = _float64_reference(x, weight, dy, (1,), 1e-5)
    ours = _run(lambda a, w: rms_norm(a, 1, w, 1e-5, backend=backend), x, weight, dy)
    unit = torch.finfo(dtype).eps
    for ref, o in zip(reference, ours, strict=True):
        assert _error(o, ref) <= 4 * unit * max(float(ref.abs().max()), 1.0)
    empty = torch.empty(0, 5, dtype=dtype)
    y, dx, dweight = _run(
        lambda a, w: rms_norm(a, 5, w, backend=backend), empty, torch.ones(5, dtype=dtype), empty
    )
    assert y.shape == (0, 5)
    assert dx.shape == (0, 5)
    assert torch.equal(dweight, torch.zeros(5, dtype=dtype))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_large_scale_and_offset_stay_accurate(backend: str) -> None:
    """x = 1e4 + N(0, 1) and x · 1e-20 in float32: within a few ulps of float64, like torch's."""
    for x in ((1e4 + torch.randn(64, 1024, dtype=torch.float64)).float(), torch.randn(64, 256) * 1e-20):
        reference = _float64_reference(x, None, x, (x.shape[-1],), 1e-30)[0]
        ours = _error(rms_norm(x, x.shape[-1], None, 1e-30, backend=backend), reference)
        theirs = _error(F.rms_norm(x, (x.shape[-1],), None, 1e-30), reference)
        assert ours <= 2 * theirs + 4 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_eps_none_is_the_dtypes_machine_epsilon(backend: str) -> None:
    """eps=None means torch.finfo(dtype).eps, as in PyTorch (visible on tiny inputs)."""
    x = torch.full((2, 4), 1e-3)
    none = rms_norm(x, 4, None, None, backend=backend)
    torch.testing.assert_close(none, rms_norm(x, 4, None, torch.finfo(torch.float32).eps, backend=backend))
    torch.testing.assert_close(none, F.rms_norm(x, (4,)))
    assert not torch.allclose(none, rms_norm(x, 4, None, 1e-6, backend=backend))


def test_module_is_a_drop_in() -> None:
    """RMSNorm takes torch.nn.RMSNorm's constructor and state dict, and refuses bad arguments."""
    theirs = torch.nn.RMSNorm((3, 4), eps=1e-6)
    with torch.no_grad():
        theirs.weight.normal_()
    ours = RMSNorm((3, 4), eps=1e-6)
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == ["weight"]
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ours(x), theirs(x))
    assert RMSNorm(4, elementwise_affine=False).weight is None
    with pytest.raises(ConfigError, match="unknown RMSNorm backend"):
        RMSNorm(4, backend="cuda-magic")
    with pytest.raises(InputError, match="expects input of shape"):
        rms_norm(torch.randn(2, 5), 4)


def test_backward_saves_only_the_input_and_one_float_per_row() -> None:
    """Bytes saved for backward: the input and rstd (plus the weight, a parameter), no more."""
    x = torch.randn(512, 256, requires_grad=True)
    weight = torch.ones(256, requires_grad=True)
    _total, beyond = saved_tensor_bytes(lambda: rms_norm(x, 256, weight, backend="numba"), exclude=[weight])
    assert beyond == x.numel() * 4 + 512 * 4


def test_model_uses_the_fused_rmsnorm_and_matches_torchs() -> None:
    """norm=rms builds the toolkit's RMSNorm (q/k norms too); rms-torch PyTorch's: same logits."""
    config = TINY.replace(norm="rms", positions="rope", mlp="swiglu", n_kv_heads=1, qk_norm=True)
    ours = Transformer(config).eval()
    assert isinstance(ours.ln_final, RMSNorm)
    assert isinstance(ours.blocks[0].attn.q_norm, RMSNorm)
    theirs = Transformer(config.replace(norm="rms-torch")).eval()
    assert isinstance(theirs.ln_final, torch.nn.RMSNorm)
    theirs.load_state_dict(ours.state_dict())
    ids = torch.randint(0, config.vocab_size, (2, config.max_seq_len))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4096, 256), (33, 300), (0, 64), (7, 1)])
def test_triton_matches_torch_on_cuda(dtype: torch.dtype, shape: tuple[int, int]) -> None:
    """The Triton RMSNorm: output, dx and dweight as close to float64 as torch's own on the GPU."""
    generator = torch.Generator().manual_seed(0)
    x = (3 + torch.randn(shape, generator=generator)).to("cuda", dtype)
    weight = (1 + 0.3 * torch.randn(shape[1], generator=generator)).to("cuda", dtype)
    dy = torch.randn(shape, generator=generator).to("cuda", dtype)
    reference = _float64_reference(x.cpu(), weight.cpu(), dy.cpu(), (shape[1],), 1e-5)
    theirs = _run(lambda a, w: F.rms_norm(a, (shape[1],), w, 1e-5), x, weight, dy)
    ours = _run(lambda a, w: rms_norm(a, shape[1], w, 1e-5, backend="triton"), x, weight, dy)
    unit = torch.finfo(dtype).eps
    for name, ref, t, o in zip(("y", "dx", "dweight"), reference, theirs, ours, strict=True):
        assert o.dtype == t.dtype, name
        floor = 4 * unit * max(float(ref.abs().max()) if ref.numel() else 0.0, 1.0)
        assert _error(o.cpu(), ref) <= 2 * _error(t.cpu(), ref) + floor, name


@pytest.mark.cuda
def test_model_on_cuda_runs_the_triton_rmsnorm() -> None:
    """A Llama-shaped model on CUDA picks the Triton RMSNorm and matches PyTorch's RMSNorm model."""
    config = TINY.replace(norm="rms", positions="rope", mlp="swiglu", n_kv_heads=1, qk_norm=True)
    with torch.device("cuda"):
        ours = Transformer(config).eval()
        theirs = Transformer(config.replace(norm="rms-torch")).eval()
    theirs.load_state_dict(ours.state_dict())
    ids = torch.randint(0, config.vocab_size, (2, config.max_seq_len), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids), rtol=1e-4, atol=1e-4)
