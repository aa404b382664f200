"""The reference transformer against Hugging Face GPT-2, closed-form counts and its input contract."""

from __future__ import annotations

import pytest
import torch
from reference import matched_pair
from tiny import TINY

from toolkit import ModelConfig, Transformer
from toolkit.errors import InputError

HF_CONFIGS = {
    "default": ModelConfig(),
    "tiny-3-heads": TINY,
    "one-head-one-layer": ModelConfig(
        vocab_size=17, max_seq_len=9, d_model=8, n_heads=1, n_layers=1, d_mlp=5
    ),
    "8-heads-eps": ModelConfig(
        vocab_size=100, max_seq_len=64, d_model=64, n_heads=8, n_layers=2, norm_eps=1e-3
    ),
    "tanh-gelu": ModelConfig(vocab_size=50, max_seq_len=16, d_model=32, n_heads=4, d_mlp=64, gelu="tanh"),
    "no-scale": ModelConfig(vocab_size=50, max_seq_len=16, d_model=32, n_heads=2, scale_attention=False),
}


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_matches_transformers_gpt2(name: str) -> None:
    """Logits equal GPT2LMHeadModel's (same random weights, biases and norm gains) to 1e-5."""
    config = HF_CONFIGS[name]
    model, hf = matched_pair(config, seed=1)
    ids = torch.randint(0, config.vocab_size, (2, config.max_seq_len))
    with torch.inference_mode():
        ours, theirs = model(ids), hf(ids).logits
    assert ours.shape == (2, config.max_seq_len, config.vocab_size)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_one_dimensional_input_is_a_batch_of_one(tiny_config: ModelConfig) -> None:
    """An [S] input gives the same logits as [1, S]."""
    model = Transformer(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (7,))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), model(ids[None]))
    assert model(ids).shape == (1, 7, tiny_config.vocab_size)


@pytest.mark.parametrize("residual", ["standard", "input-skip", "no-mlp-skip", "parallel"])
def test_causal(tiny_config: ModelConfig, residual: str) -> None:
    """Changing a later token never changes the logits of earlier positions."""
    model = Transformer(tiny_config.replace(residual=residual)).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (1, 20))
    changed = ids.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % tiny_config.vocab_size
    with torch.inference_mode():
        before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :12], after[:, :12], atol=0, rtol=0)
    assert not torch.allclose(before[:, 12:], after[:, 12:])


@pytest.mark.parametrize("name", ["tiny-3-heads", "tanh-gelu"])
def test_gradients_match_transformers_gpt2(name: str) -> None:
    """Backward through the model (in-place GELU and skips) gives GPT-2's float64 gradients."""
    config = HF_CONFIGS[name]
    model, hf = matched_pair(config, seed=2)
    model, hf = model.double(), hf.double()
    ids = torch.randint(0, config.vocab_size, (2, config.max_seq_len))
    model(ids).logsumexp(-1).sum().backward()
    hf(ids).logits.logsumexp(-1).sum().backward()
    gpt = hf.transformer
    pairs = [  # (toolkit parameter, GPT-2 parameter, whether GPT-2's Conv1D stores it transposed)
        (model.token_embedding.weight, gpt.wte.weight, False),
        (model.position_embedding.weight, gpt.wpe.weight, False),
        (model.ln_final.weight, gpt.ln_f.weight, False),
    ]
    for block, hf_block in zip(model.blocks, gpt.h, strict=True):
        pairs += [
            (block.ln1.weight, hf_block.ln_1.weight, False),
            (block.attn.qkv.weight, hf_block.attn.c_attn.weight, True),
            (block.attn.out_proj.bias, hf_block.attn.c_proj.bias, False),
            (block.mlp.up.weight, hf_block.mlp.c_fc.weight, True),
            (block.mlp.down.bias, hf_block.mlp.c_proj.bias, False),
        ]
    for ours, theirs, transposed in pairs:
        assert ours.grad is not None
        assert theirs.grad is not None
        expected = theirs.grad.T if transposed else theirs.grad
        torch.testing.assert_close(ours.grad, expected, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("residual", ["standard", "input-skip", "no-mlp-skip", "parallel"])
def test_gradients_match_finite_differences(residual: str) -> None:
    """Every residual wiring's backward agrees with float64 finite differences (torch gradcheck)."""
    config = ModelConfig(
        vocab_size=11, max_seq_len=6, d_model=8, n_heads=2, n_layers=2, d_mlp=5, residual=residual
    )
    model = Transformer(config).double()
    ids = torch.randint(0, config.vocab_size, (2, 6))
    names = [
        "position_embedding.weight",
        "blocks.0.ln1.weight",
        "blocks.0.mlp.up.weight",
        "blocks.1.attn.qkv.bias",
    ]
    params = dict(model.named_parameters())
    inputs = tuple(params[name].detach().clone().requires_grad_() for name in names)

    def logits(*values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(names, values, strict=True)), (ids,))

    assert torch.autograd.gradcheck(logits, inputs)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_parameter_count_closed_form(name: str) -> None:
    """Parameters equal V·d + S·d + L·(4d² + 4d + 2·d·d_mlp + d_mlp + d + 4d) + 2d (tied head)."""
    c = HF_CONFIGS[name]
    d = c.d_model
    per_block = 4 * d * d + 4 * d + 2 * d * c.d_mlp + c.d_mlp + d + 4 * d
    expected = c.vocab_size * d + c.max_seq_len * d + c.n_layers * per_block + 2 * d
    assert sum(p.numel() for p in Transformer(c).parameters()) == expected


def test_lm_head_is_tied(tiny_config: ModelConfig) -> None:
    """The output projection is the word embedding itself: changing one changes the logits."""
    model = Transformer(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (1, 5))
    with torch.no_grad():
        h = model.ln_final(
            model.blocks[1](
                model.blocks[0](model.token_embedding(ids) + model.position_embedding(torch.arange(5)))
            )
        )
        torch.testing.assert_close(model(ids), h @ model.token_embedding.weight.T)
        # One tensor, not a copy: changing the embedding of token 7 changes every position's logit 7
        # and nothing else in the head; no separate head parameter exists.
        before = model(ids)
        model.token_embedding.weight[7] += 1.0
        after = model(ids)
    changed = (after - before).abs().amax(dim=(0, 1)) > 0
    assert changed[7]
    assert not any("head" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.zeros(1, 33, dtype=torch.long), "exceeds max_seq_len=32"),
        (torch.tensor([[0, 61]]), r"must lie in \[0, 60\]"),
        (torch.tensor([[-1, 3]]), r"must lie in \[0, 60\]"),
        (torch.zeros(1, 3), "integer tensor"),
        (torch.zeros(1, 1, 3, dtype=torch.long), "shape"),
        (torch.zeros(1, 0, dtype=torch.long), "empty"),
    ],
)
def test_bad_input_is_refused(tiny_config: ModelConfig, ids: torch.Tensor, message: str) -> None:
    """Too-long sequences, out-of-vocabulary ids and wrong dtypes raise InputError, not an index error."""
    with pytest.raises(InputError, match=message):
        Transformer(tiny_config)(ids)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_runs_close_to_float32(tiny_config: ModelConfig, dtype: torch.dtype) -> None:
    """bfloat16 and float16 forward passes run and stay close to float32."""
    model = Transformer(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (2, 16))
    with torch.inference_mode():
        reference = model(ids)
        low = model.to(dtype)(ids)
    assert low.dtype == dtype
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_cpu(tiny_config: ModelConfig, dtype: torch.dtype) -> None:
    """On a GPU, the model gives the CPU's float32 logits within the dtype's precision."""
    model = Transformer(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (2, 16))
    with torch.inference_mode():
        reference = model(ids)
        gpu = model.to("cuda", dtype)(ids.cuda()).float().cpu()
    tolerance = 1e-4 if dtype == torch.float32 else 0.05 * float(reference.abs().max())
    assert (gpu - reference).abs().max() <= tolerance


def test_residual_projections_use_gpt2_scaled_init() -> None:
    """Attention-out and MLP-down weights start with std 0.02/sqrt(2·n_layers); the others with 0.02."""
    config = ModelConfig(d_model=256, n_layers=8, d_mlp=1024)
    model = Transformer(config)
    scaled = 0.02 / (2 * config.n_layers) ** 0.5
    for block in model.blocks:
        assert float(block.attn.out_proj.weight.detach().std()) == pytest.approx(scaled, rel=0.05)
        assert float(block.mlp.down.weight.detach().std()) == pytest.approx(scaled, rel=0.05)
        assert float(block.attn.qkv.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
        assert float(block.mlp.up.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
