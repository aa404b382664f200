"""Checkpoints made independently of the toolkit: GPT-2's weights written key by key under the supplied
format's names (SPEC's table), reference examples computed by GPT-2, and a pickle that would run code.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from reference import hf_gpt2, randomize_
from safetensors.torch import save_file
from tiny import TINY
from transformers import GPT2LMHeadModel

from toolkit import ModelConfig
from toolkit.weights import Example, write_examples

LENGTHS = (1, 5, TINY.max_seq_len)


def head_major(fused: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[Q heads | K heads | V heads] on the last axis -> [head 0: q k v | head 1: q k v | ...]."""
    d = fused.shape[-1] // 3
    head_dim = d // n_heads
    order = [
        part * d + head * head_dim + j
        for head in range(n_heads)
        for part in range(3)
        for j in range(head_dim)
    ]
    return fused[..., order]


def to_supplied(
    hf: GPT2LMHeadModel, layout: str = "qkv-major", bias_2d: bool = False
) -> dict[str, torch.Tensor]:
    """GPT-2's weights under SPEC.md's supplied names; Conv1D already stores [in, out] for x @ W."""

    def bias(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(0) if bias_2d else tensor

    gpt = hf.transformer
    state = {
        "transformer.word_embeddings.weight": gpt.wte.weight,
        "transformer.positional_embeddings.weight": gpt.wpe.weight,
        "transformer.final_ln.weight": gpt.ln_f.weight,
        "transformer.final_ln.bias": gpt.ln_f.bias,
        "lm_head.weight": hf.lm_head.weight,
    }
    for i, block in enumerate(gpt.h):
        qkv_weight, qkv_bias = block.attn.c_attn.weight, block.attn.c_attn.bias
        if layout == "head-major":
            qkv_weight, qkv_bias = (
                head_major(qkv_weight, hf.config.n_head),
                head_major(qkv_bias, hf.config.n_head),
            )
        p = f"transformer.h.{i}."
        state |= {
            p + "pre_attn_ln.weight": block.ln_1.weight,
            p + "pre_attn_ln.bias": block.ln_1.bias,
            p + "attn.qkv_proj.weight": qkv_weight,
            p + "attn.qkv_proj.bias": bias(qkv_bias),
            p + "attn.out_proj.weight": block.attn.c_proj.weight,
            p + "attn.out_proj.bias": bias(block.attn.c_proj.bias),
            p + "pre_mlp_ln.weight": block.ln_2.weight,
            p + "pre_mlp_ln.bias": block.ln_2.bias,
            p + "mlp.up_proj.weight": block.mlp.c_fc.weight,
            p + "mlp.up_proj.bias": bias(block.mlp.c_fc.bias),
            p + "mlp.down_proj.weight": block.mlp.c_proj.weight,
            p + "mlp.down_proj.bias": bias(block.mlp.c_proj.bias),
        }
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


@torch.no_grad()
def gpt2_examples(hf: GPT2LMHeadModel, lengths: tuple[int, ...] = LENGTHS, seed: int = 1) -> list[Example]:
    """Random ids and GPT-2's logits for them, computed in float64."""
    hf64 = copy.deepcopy(hf).double()
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for length in lengths:
        ids = torch.randint(0, hf.config.vocab_size, (length,), generator=generator)
        examples.append(Example(ids, hf64(ids.unsqueeze(0)).logits[0].float()))
    return examples


def gpt2(config: ModelConfig = TINY, seed: int = 0) -> GPT2LMHeadModel:
    """A GPT-2 of ``config`` with every parameter randomised (norm gains and biases too)."""
    hf = hf_gpt2(config)
    randomize_(hf, seed)
    return hf


def write_pair(folder: Path, state: dict[str, torch.Tensor], examples: list[Example]) -> tuple[Path, Path]:
    """Write a checkpoint and its examples into ``folder``; return both paths."""
    save_file(state, str(folder / "ckpt.safetensors"))
    write_examples(examples, folder / "examples.safetensors")
    return folder / "ckpt.safetensors", folder / "examples.safetensors"


def mapping_file(folder: Path, edit: Any) -> Path:
    """The built-in mapping, changed by ``edit(data)``, written to ``folder``."""
    data = json.loads(
        resources.files("toolkit").joinpath("data/keys_mapping.json").read_text(encoding="utf-8")
    )
    edit(data)
    path = folder / "mapping.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


class RunsCode:
    """Unpickling this calls open(marker, 'w'), creating the marker file: code that runs on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@torch.no_grad()
def from_supplied(state: dict[str, torch.Tensor], config: ModelConfig) -> GPT2LMHeadModel:
    """GPT-2 holding a supplied-format state dict (qkv-major), key by key from SPEC's table."""
    hf = hf_gpt2(config)
    gpt = hf.transformer
    gpt.wte.weight.copy_(state["transformer.word_embeddings.weight"])
    gpt.wpe.weight.copy_(state["transformer.positional_embeddings.weight"])
    gpt.ln_f.weight.copy_(state["transformer.final_ln.weight"])
    gpt.ln_f.bias.copy_(state["transformer.final_ln.bias"])
    for i, block in enumerate(gpt.h):
        p = f"transformer.h.{i}."
        pairs = {
            block.ln_1.weight: "pre_attn_ln.weight",
            block.ln_1.bias: "pre_attn_ln.bias",
            block.attn.c_attn.weight: "attn.qkv_proj.weight",  # Conv1D is [in, out] like x @ W
            block.attn.c_attn.bias: "attn.qkv_proj.bias",
            block.attn.c_proj.weight: "attn.out_proj.weight",
            block.attn.c_proj.bias: "attn.out_proj.bias",
            block.ln_2.weight: "pre_mlp_ln.weight",
            block.ln_2.bias: "pre_mlp_ln.bias",
            block.mlp.c_fc.weight: "mlp.up_proj.weight",
            block.mlp.c_fc.bias: "mlp.up_proj.bias",
            block.mlp.c_proj.weight: "mlp.down_proj.weight",
            block.mlp.c_proj.bias: "mlp.down_proj.bias",
        }
        for param, key in pairs.items():
            param.copy_(state[p + key].reshape(param.shape))  # biases may be stored [1, n]
    return hf
