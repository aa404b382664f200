"""Independent references: Hugging Face ``transformers``' GPT-2 holding the toolkit model's weights."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from toolkit import ModelConfig, Transformer


def hf_gpt2(config: ModelConfig, attn_implementation: str = "eager") -> GPT2LMHeadModel:
    """A randomly initialised GPT2LMHeadModel computing the same function as ``Transformer(config)``."""
    if config.residual != "standard" or config.norm != "torch":
        raise ValueError("GPT-2 has only the standard residual wiring and torch LayerNorm")
    hf_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_seq_len,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=config.d_mlp,
        activation_function="gelu_new" if config.gelu == "tanh" else "gelu",
        layer_norm_epsilon=config.norm_eps,
        scale_attn_weights=config.scale_attention,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf_config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(hf_config).eval()


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter (norm gains and biases too) random values, so no mapping error hides."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in module.named_parameters():
        scale = 0.5 if ("ln" in name and name.endswith("weight")) else 0.1
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float64) * scale
        param.copy_(noise + (1.0 if scale == 0.5 else 0.0))


@torch.no_grad()
def copy_hf_into_toolkit(hf: GPT2LMHeadModel, model: Transformer) -> None:
    """Copy GPT-2's weights into the toolkit model; Conv1D stores [in, out], nn.Linear [out, in]."""
    gpt = hf.transformer
    model.token_embedding.weight.copy_(gpt.wte.weight)
    model.position_embedding.weight.copy_(gpt.wpe.weight)
    for block, hf_block in zip(model.blocks, gpt.h, strict=True):
        block.ln1.load_state_dict(hf_block.ln_1.state_dict())
        block.ln2.load_state_dict(hf_block.ln_2.state_dict())
        block.attn.qkv.weight.copy_(hf_block.attn.c_attn.weight.T)
        block.attn.qkv.bias.copy_(hf_block.attn.c_attn.bias)
        block.attn.out_proj.weight.copy_(hf_block.attn.c_proj.weight.T)
        block.attn.out_proj.bias.copy_(hf_block.attn.c_proj.bias)
        block.mlp.up.weight.copy_(hf_block.mlp.c_fc.weight.T)
        block.mlp.up.bias.copy_(hf_block.mlp.c_fc.bias)
        block.mlp.down.weight.copy_(hf_block.mlp.c_proj.weight.T)
        block.mlp.down.bias.copy_(hf_block.mlp.c_proj.bias)
    model.ln_final.load_state_dict(gpt.ln_f.state_dict())


def matched_pair(config: ModelConfig, seed: int = 0) -> tuple[Transformer, GPT2LMHeadModel]:
    """A toolkit model and a GPT-2 with the same random weights, both in eval mode."""
    hf = hf_gpt2(config)
    randomize_(hf, seed)
    model = Transformer(config).eval()
    copy_hf_into_toolkit(hf, model)
    return model, hf
