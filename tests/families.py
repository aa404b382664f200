"""Tiny models of the families people download today, written by `transformers` itself
(save_pretrained) with float32 weights moved away from their initialisation: the independent
references of the family tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 97
COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 48,
    "intermediate_size": 80,
    "num_hidden_layers": 2,
    "max_position_embeddings": 64,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
}

FAMILIES: dict[str, tuple[type[PreTrainedModel], PretrainedConfig]] = {
    # Llama with grouped-query attention (6 heads, 2 kv heads) and a separate LM head (TinyLlama)
    "llama-gqa-untied": (
        LlamaForCausalLM,
        LlamaConfig(**COMMON, num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False),
    ),
    # SmolLM-like: multi-query attention (1 kv head), tied head, theta 1e5
    "smollm-mqa-tied": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON,
            num_attention_heads=6,
            num_key_value_heads=1,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        ),
    ),
    # Llama 3 RoPE scaling, trained context 16 < the 64 positions the examples use
    "llama3-rope": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "llama-linear-rope": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON,
            num_attention_heads=4,
            num_key_value_heads=4,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
        ),
    ),
    # Qwen2: biases on q, k, v only
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**COMMON, num_attention_heads=6, num_key_value_heads=2)),
    # Qwen3: per-head q/k RMSNorm, head_dim 16 != 48 / 6
    "qwen3": (
        Qwen3ForCausalLM,
        Qwen3Config(
            **COMMON, num_attention_heads=6, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True
        ),
    ),
    # Mistral with a window wider than every sequence
    "mistral": (
        MistralForCausalLM,
        MistralConfig(**COMMON, num_attention_heads=6, num_key_value_heads=2, sliding_window=64),
    ),
    # Pythia: 25% of each head rotated, parallel residual, LayerNorm with biases, untied head
    "pythia": (
        GPTNeoXForCausalLM,
        GPTNeoXConfig(**{**COMMON, "hidden_size": 64}, num_attention_heads=4, use_parallel_residual=True),
    ),
}


@torch.no_grad()
def perturbed(model: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """``model`` with every parameter moved by N(0, 0.1²): norms away from 1, biases away from 0."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def family_model(name: str, **changes: Any) -> PreTrainedModel:
    """The named tiny family model, its config changed by ``changes``, with perturbed float32 weights."""
    model_class, config = FAMILIES[name]
    config = config.__class__.from_dict({**config.to_dict(), **changes})
    return perturbed(model_class(config))


def write_family(name: str, directory: Path, dtype: torch.dtype = torch.float32, **changes: Any) -> tuple[
    PreTrainedModel, Path
]:  # fmt: skip
    """save_pretrained of the named model (weights stored in ``dtype``); returns the float32 reference
    model holding exactly the stored weights, and the directory."""
    model = family_model(name, **changes)
    model.to(dtype).save_pretrained(directory)
    reference = type(model).from_pretrained(directory, dtype=torch.float32).eval()
    return reference, directory


def hub_style(directory: Path) -> dict[str, Any]:
    """Rewrite a directory's config.json the way transformers 4.x wrote the Hub's: ``rope_theta`` and
    ``rope_scaling`` (``rotary_pct`` and ``rotary_emb_base`` for GPT-NeoX) instead of
    ``rope_parameters``. Returns the new config."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    rope = dict(config.pop("rope_parameters"))
    theta = rope.pop("rope_theta")
    fraction = rope.pop("partial_rotary_factor", None)
    if config["model_type"] == "gpt_neox":
        config["rotary_emb_base"], config["rotary_pct"] = theta, fraction
    else:
        config["rope_theta"] = theta
    config["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    path.write_text(json.dumps(config))
    return config


def random_ids(length: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
