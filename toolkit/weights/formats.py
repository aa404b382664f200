"""Which checkpoint format a path holds, read from its content, and each format's own config.

- ``hf``: a Hugging Face directory of a model family (``model_type`` llama, mistral, qwen2, qwen3 or
  gpt_neox; ``toolkit.families`` reads its config, ``toolkit.weights.families`` its keys);
- ``hf-gpt2``: a Hugging Face GPT-2 directory (``config.json`` with ``model_type: "gpt2"`` and
  ``model.safetensors``, sharded safetensors with ``model.safetensors.index.json``, or an older
  ``pytorch_model.bin``), or a bare state dict with GPT-2's key names and Conv1D's [in, out] layout;
- ``nanogpt``: nanoGPT's ``ckpt.pt`` (``model`` and ``model_args``), or a bare state dict with its
  names and nn.Linear's [out, in] layout;
- ``toolkit``: a toolkit export (safetensors with the config in its metadata);
- ``supplied``: anything else, read through the supplied format's mapping (docs/reference.md).

Only reading a format's config is code here; each key layout is a shipped JSON mapping
(``toolkit/data/mappings/``). What the toolkit's model cannot represent is refused by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import WeightsError, setting
from toolkit.families import GPT2_KEYS, HF_ACTIVATIONS, hf_config
from toolkit.weights.files import as_state_dict, read_tensors

FORMATS = ("auto", "hf", "hf-gpt2", "nanogpt", "supplied", "toolkit")
EXPORT_METADATA_KEY = "toolkit_config"
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
FAMILY_PREFIXES = ("model.layers.", "gpt_neox.layers.")  # Llama-family and GPT-NeoX state dicts
COMPILE_PREFIX = "_orig_mod."  # torch.compile's wrapper in nanoGPT's saved state dicts
HF_GELU = HF_ACTIVATIONS  # these names stay importable here; toolkit.families reads every HF config now
HF_KEYS = GPT2_KEYS
NANOGPT_KEYS = {
    "vocab_size": "vocab_size",
    "max_seq_len": "block_size",
    "d_model": "n_embd",
    "n_heads": "n_head",
    "n_layers": "n_layer",
    "d_mlp": "4·n_embd, always",
    "norm_eps": "nanoGPT's LayerNorm: always 1e-5",
    "gelu": "nanoGPT's nn.GELU(): always exact",
    "scale_attention": "nanoGPT: always 1/sqrt(head size)",
}
"""Where each ModelConfig field comes from in the format's own config."""


@dataclass
class Checkpoint:
    """A checkpoint's tensors, its format, and the config fields it records (with their source)."""

    path: Path
    checkpoint_format: str  # "hf", "hf-gpt2", "nanogpt", "supplied" or "toolkit"
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields the checkpoint states
    config_source: str = ""  # where they were read ("config.json", "model_args")
    config_keys: dict[str, str] = field(default_factory=dict)  # field -> the format's own name for it
    model_type: str = ""  # a Hugging Face directory's model_type


def open_checkpoint(path: str | Path, checkpoint_format: str = "auto") -> Checkpoint:
    """Read ``path`` (a file or an HF directory) and tell its format from its content; with a
    forced ``checkpoint_format`` other than auto, a checkpoint of another format is refused."""
    if checkpoint_format not in FORMATS:
        raise WeightsError(f"unknown {setting('format')} {checkpoint_format!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    if path.is_dir():
        found = _read_hf_directory(path)
    else:
        content, metadata = read_tensors(path, allow_bin=True)
        found = _read_file(path, content, metadata)
    if checkpoint_format not in ("auto", found.checkpoint_format):
        raise WeightsError(
            f"{path} is a {_describe(found.checkpoint_format)}, not a {_describe(checkpoint_format)}; drop "
            f"{setting('format')} (auto detects it) or pass {setting('format')} {found.checkpoint_format}"
        )
    return found


def _describe(checkpoint_format: str) -> str:
    return {
        "hf": "Hugging Face checkpoint of a model family (Llama, Mistral, Qwen2, Qwen3, GPT-NeoX)",
        "hf-gpt2": "Hugging Face GPT-2 checkpoint",
        "nanogpt": "nanoGPT checkpoint",
        "supplied": "checkpoint in the supplied format",
        "toolkit": "toolkit export",
    }[checkpoint_format]


def _read_file(path: Path, content: Any, metadata: dict[str, str]) -> Checkpoint:
    if EXPORT_METADATA_KEY in metadata:
        return Checkpoint(path, "toolkit", as_state_dict(content, path), metadata)
    if isinstance(content, dict) and _nanogpt_model(content.get("model")):
        if "model_args" not in content:
            raise WeightsError(
                f"{path} looks like a nanoGPT checkpoint ('model' entry) but has no 'model_args', so its "
                "head count and sizes are unknown; save it with nanoGPT's train.py, or pass the bare state "
                f"dict with {setting('n_heads')}"
            )
        tensors = _strip_compile_prefix(as_state_dict(content["model"], path))
        return Checkpoint(
            path, "nanogpt", tensors, {}, _nanogpt_config(content["model_args"], path), "model_args"
        )
    tensors = _strip_compile_prefix(as_state_dict(content, path))
    family = next(
        (prefix for prefix in FAMILY_PREFIXES if any(key.startswith(prefix) for key in tensors)), None
    )
    if family is not None:
        raise WeightsError(
            f"{path} is a bare state dict with a model family's key names ({family}*), without the "
            "config.json that records its head counts, head size, RoPE and norm settings, which no shape "
            "shows; pass its Hugging Face directory (config.json beside the weights)"
        )
    return Checkpoint(path, _bare_format(tensors), tensors, metadata)


def _nanogpt_model(model: Any) -> bool:
    """A nanoGPT state dict (GPT-2's key names, compiled or not); other ``{"model": ...}`` wrappers
    are plain state dicts of the supplied format."""
    return isinstance(model, dict) and any(
        str(key).removeprefix(COMPILE_PREFIX) == "transformer.wte.weight" for key in model
    )


def _strip_compile_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix(COMPILE_PREFIX): tensor for key, tensor in tensors.items()}


def _bare_format(tensors: dict[str, torch.Tensor]) -> str:
    """GPT-2's key names: Conv1D's c_attn [d, 3d] is HF; nn.Linear's [3d, d] is nanoGPT."""
    embedding, fused = (
        tensors.get("transformer.wte.weight"),
        tensors.get("transformer.h.0.attn.c_attn.weight"),
    )
    if embedding is None or fused is None or embedding.dim() != 2 or fused.dim() != 2:
        return "supplied"
    d = embedding.shape[1]
    if tuple(fused.shape) == (d, 3 * d):
        return "hf-gpt2"
    if tuple(fused.shape) == (3 * d, d):
        return "nanogpt"
    return "supplied"


# --------------------------------------------------------------------------------------------------
# Hugging Face GPT-2 directories


def _read_hf_directory(path: Path) -> Checkpoint:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise WeightsError(
            f"{path} is a directory without config.json; pass a Hugging Face directory "
            "(config.json and model.safetensors, as save_pretrained writes) or a checkpoint file"
        )
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(
            f"{config_file} is not valid JSON ({exc}); write it again with save_pretrained"
        ) from None
    if not isinstance(raw, dict):
        raise WeightsError(f"{config_file} must hold one JSON object (a model's config)")
    config, keys = hf_config(raw, str(config_file), WeightsError)  # refuses what the model cannot be
    weights = next((path / name for name in HF_WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise WeightsError(
            f"{path} has config.json but no weights: none of {', '.join(HF_WEIGHT_FILES)}; copy the weight "
            "file(s) beside it"
        )
    if weights.name.endswith(".index.json"):
        tensors = _read_shards(weights)
    else:
        content, _ = read_tensors(weights, allow_bin=True)
        tensors = as_state_dict(content, weights)
    model_type = str(raw["model_type"])
    if model_type != "gpt2":
        return Checkpoint(path, "hf", tensors, {}, config, "config.json", keys, model_type)
    return Checkpoint(path, "hf-gpt2", _hf_key_names(tensors), {}, config, "config.json", keys, model_type)


def _hf_key_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT2Model (no LM head) saves its keys without the 'transformer.' prefix: add it."""
    if "wte.weight" in tensors:
        return {f"transformer.{key}" if key != "lm_head.weight" else key: t for key, t in tensors.items()}
    return tensors


def _read_shards(index_file: Path) -> dict[str, torch.Tensor]:
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{index_file} is not a shard index with a 'weight_map' ({exc})") from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        shard_path = index_file.parent / str(shard)
        if not shard_path.is_file():
            raise WeightsError(
                f"{index_file} names the shard {shard}, which is not in {index_file.parent}; copy every shard"
            )
        content, _ = read_tensors(shard_path)
        tensors |= as_state_dict(content, shard_path)
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise WeightsError(f"{index_file} lists tensors no shard holds: {', '.join(missing[:4])}")
    return tensors


# --------------------------------------------------------------------------------------------------
# nanoGPT


def _nanogpt_config(args: Any, where: Path) -> dict[str, Any]:
    """nanoGPT's model_args as ModelConfig fields (its GELU is exact, its LayerNorm eps 1e-5)."""
    if not isinstance(args, dict):
        raise WeightsError(f"{where}: 'model_args' must be a dict (n_layer, n_head, n_embd, ...)")
    if args.get("bias") is False:
        raise WeightsError(
            f"{where} was trained with bias=False (no biases in Linear and LayerNorm layers); the toolkit's "
            "model always has biases and cannot represent it"
        )
    try:
        d_model = int(args["n_embd"])
        return {
            "vocab_size": int(args["vocab_size"]),
            "max_seq_len": int(args["block_size"]),
            "d_model": d_model,
            "n_heads": int(args["n_head"]),
            "n_layers": int(args["n_layer"]),
            "d_mlp": 4 * d_model,
            "norm_eps": 1e-5,
            "gelu": "none",
            "scale_attention": True,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: 'model_args' lacks a size ({exc}); nanoGPT writes n_layer, n_head, "
                           "n_embd, block_size, bias and vocab_size") from None  # fmt: skip
