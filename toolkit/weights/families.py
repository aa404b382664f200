"""Hugging Face checkpoints of the model families (Llama, Mistral, Qwen2, Qwen3, GPT-NeoX) as the
toolkit's state dict.

Each family's key names are a table of patterns below, read top to bottom like the JSON mappings
of GPT-2. Two layouts need more than a rename, and both are done here in plain sight:

- Llama-family attention keeps q, k and v in three ``nn.Linear``s; the toolkit's fused ``attn.qkv``
  holds [Q of all heads | K of the kv heads | V of the kv heads], so the three are concatenated
  (the one copy of the load; every other tensor stays a view of the memory-mapped file).
- GPT-NeoX fuses q|k|v per head ([q_h, k_h, v_h] for each head in turn), unlike GPT-2's
  [all q | all k | all v]: the rows are regrouped.

``nn.Linear`` weights are [out, in] in both, as in the toolkit: nothing is transposed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from toolkit.config import ModelConfig
from toolkit.errors import CheckpointKeysError, WeightsError
from toolkit.weights.files import refuse_non_float, shape_text, state_problems
from toolkit.weights.pages import convert_state, file_backed_ranges, release_pages


@dataclass(frozen=True)
class KeyRule:
    """A checkpoint key pattern (``{i}`` = block index) and the toolkit parameter it fills."""

    source: str
    target: str
    part: str = ""  # "q", "k", "v": one third of a fused toolkit parameter

    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.source).replace(r"\{i\}", r"(\d+)") + r"\Z")


_LLAMA = (
    KeyRule("model.embed_tokens.weight", "token_embedding.weight"),
    KeyRule("model.layers.{i}.input_layernorm.weight", "blocks.{i}.ln1.weight"),
    KeyRule("model.layers.{i}.self_attn.q_proj.weight", "blocks.{i}.attn.qkv.weight", "q"),
    KeyRule("model.layers.{i}.self_attn.k_proj.weight", "blocks.{i}.attn.qkv.weight", "k"),
    KeyRule("model.layers.{i}.self_attn.v_proj.weight", "blocks.{i}.attn.qkv.weight", "v"),
    KeyRule("model.layers.{i}.self_attn.q_proj.bias", "blocks.{i}.attn.qkv.bias", "q"),
    KeyRule("model.layers.{i}.self_attn.k_proj.bias", "blocks.{i}.attn.qkv.bias", "k"),
    KeyRule("model.layers.{i}.self_attn.v_proj.bias", "blocks.{i}.attn.qkv.bias", "v"),
    KeyRule("model.layers.{i}.self_attn.q_norm.weight", "blocks.{i}.attn.q_norm.weight"),  # Qwen3
    KeyRule("model.layers.{i}.self_attn.k_norm.weight", "blocks.{i}.attn.k_norm.weight"),  # Qwen3
    KeyRule("model.layers.{i}.self_attn.o_proj.weight", "blocks.{i}.attn.out_proj.weight"),
    KeyRule("model.layers.{i}.self_attn.o_proj.bias", "blocks.{i}.attn.out_proj.bias"),
    KeyRule("model.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.ln2.weight"),
    KeyRule("model.layers.{i}.mlp.gate_proj.weight", "blocks.{i}.mlp.gate.weight"),
    KeyRule("model.layers.{i}.mlp.up_proj.weight", "blocks.{i}.mlp.up.weight"),
    KeyRule("model.layers.{i}.mlp.down_proj.weight", "blocks.{i}.mlp.down.weight"),
    KeyRule("model.layers.{i}.mlp.gate_proj.bias", "blocks.{i}.mlp.gate.bias"),
    KeyRule("model.layers.{i}.mlp.up_proj.bias", "blocks.{i}.mlp.up.bias"),
    KeyRule("model.layers.{i}.mlp.down_proj.bias", "blocks.{i}.mlp.down.bias"),
    KeyRule("model.norm.weight", "ln_final.weight"),
    KeyRule("lm_head.weight", "lm_head.weight"),
)
_GPT_NEOX = (
    KeyRule("gpt_neox.embed_in.weight", "token_embedding.weight"),
    KeyRule("gpt_neox.layers.{i}.input_layernorm.weight", "blocks.{i}.ln1.weight"),
    KeyRule("gpt_neox.layers.{i}.input_layernorm.bias", "blocks.{i}.ln1.bias"),
    KeyRule("gpt_neox.layers.{i}.attention.query_key_value.weight", "blocks.{i}.attn.qkv.weight", "per-head"),
    KeyRule("gpt_neox.layers.{i}.attention.query_key_value.bias", "blocks.{i}.attn.qkv.bias", "per-head"),
    KeyRule("gpt_neox.layers.{i}.attention.dense.weight", "blocks.{i}.attn.out_proj.weight"),
    KeyRule("gpt_neox.layers.{i}.attention.dense.bias", "blocks.{i}.attn.out_proj.bias"),
    KeyRule("gpt_neox.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.ln2.weight"),
    KeyRule("gpt_neox.layers.{i}.post_attention_layernorm.bias", "blocks.{i}.ln2.bias"),
    KeyRule("gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight", "blocks.{i}.mlp.up.weight"),
    KeyRule("gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias", "blocks.{i}.mlp.up.bias"),
    KeyRule("gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight", "blocks.{i}.mlp.down.weight"),
    KeyRule("gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias", "blocks.{i}.mlp.down.bias"),
    KeyRule("gpt_neox.final_layer_norm.weight", "ln_final.weight"),
    KeyRule("gpt_neox.final_layer_norm.bias", "ln_final.bias"),
    KeyRule("embed_out.weight", "lm_head.weight"),
)
KEY_RULES = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "gpt_neox": _GPT_NEOX}
IGNORED = re.compile(r".*(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)\Z")
"""Buffers some older files saved beside the weights (RoPE frequencies, causal masks): not weights."""


def family_state(
    tensors: dict[str, torch.Tensor],
    model_type: str,
    config: ModelConfig,
    expected: dict[str, torch.Size],
    path: str,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """The toolkit state dict (in ``dtype``) of a family checkpoint's tensors; every missing, unexpected or
    misshapen key is named, and a tied head stored anyway must equal the embeddings."""
    rules = KEY_RULES[model_type]
    patterns = [(rule, rule.pattern()) for rule in rules]
    state: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}  # fused target -> {"q": ..., "k": ..., "v": ...}
    unexpected: list[str] = []
    tensors = {key: tensor for key, tensor in tensors.items() if not IGNORED.match(key)}
    refuse_non_float(tensors, path)
    for key, tensor in tensors.items():
        hit = next(((rule, m) for rule, m in ((r, p.match(key)) for r, p in patterns) if m), None)
        if hit is None:
            unexpected.append(f"{key} {shape_text(tensor)}")
            continue
        rule, match = hit
        target = rule.target.replace("{i}", match.group(1)) if "{i}" in rule.target else rule.target
        if rule.part in ("q", "k", "v"):
            parts.setdefault(target, {})[rule.part] = tensor
        elif rule.part == "per-head":
            state[target] = _regroup_per_head(tensor, config)
        else:
            state[target] = tensor
    missing: list[str] = []
    file_ranges = file_backed_ranges()
    for target, found in parts.items():
        absent = [part for part in "qkv" if part not in found]
        if absent:
            missing += [f"{target} ({part} part)" for part in absent]
        else:  # [Q heads | K kv-heads | V kv-heads]: the one copy; the file's pages are not needed again
            state[target] = torch.cat([found["q"], found["k"], found["v"]])
            release_pages(found.values(), file_ranges)
    if config.tied_head and "lm_head.weight" in state:
        _check_tied(state.pop("lm_head.weight"), state.get("token_embedding.weight"), path)
    absent, extra, mismatched = state_problems(expected, state)
    missing, unexpected = missing + absent, unexpected + extra
    if missing or unexpected or mismatched:
        raise CheckpointKeysError(path, missing, unexpected, mismatched)
    return convert_state(state, dtype, file_ranges)


def _regroup_per_head(fused: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """GPT-NeoX's [q_h, k_h, v_h for each head h] rows -> [all q | all k | all v] (GPT-2's order)."""
    heads, head_dim = config.n_heads, config.head_dim
    if fused.shape[0] != 3 * heads * head_dim:
        return fused  # a misshapen tensor: reported with the others by the shape check
    rest = tuple(fused.shape[1:])
    parts = fused.reshape(heads, 3, head_dim, *rest).transpose(0, 1)  # (qkv, nh, hs, ...)
    return parts.reshape(3 * heads * head_dim, *rest)


def _check_tied(head: torch.Tensor, embedding: torch.Tensor | None, path: str) -> None:
    if embedding is None or head.shape != embedding.shape or not torch.equal(head, embedding):
        raise WeightsError(
            f"checkpoint {path}: lm_head.weight differs from the word embeddings, but its config.json sets "
            "tie_word_embeddings: true; fix tie_word_embeddings (false keeps the head apart)"
        )
