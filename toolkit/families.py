"""The model families' Hugging Face ``config.json`` as ModelConfig fields (pure Python: no torch).

Llama (SmolLM, TinyLlama), Mistral, Qwen2 (Qwen2.5), Qwen3 and GPT-NeoX (Pythia) differ from GPT-2
in a handful of choices, each one ModelConfig field (docs/reference.md, "Model families"). Two
config styles exist and read the same: what the Hub holds (written by transformers 4.x:
``rope_theta``, ``rope_scaling``, ``rotary_pct``, ``rotary_emb_base``) and what transformers 5
writes (``rope_parameters`` holding ``rope_theta``, ``rope_type``, ``partial_rotary_factor`` and the
scaling fields). What the model cannot express is refused by name, never approximated.
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import ConfigError, ToolkitError

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gpt_neox")
"""Hugging Face ``model_type`` values the toolkit's model expresses, beside ``gpt2``."""
MIXTURES_OF_EXPERTS = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "olmoe", "dbrx",
                       "jamba", "granitemoe", "phimoe", "llama4")  # fmt: skip
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")
SOFTCAP_KEYS = ("final_logit_softcapping", "attn_logit_softcapping")
HF_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}
"""GELU names -> ModelConfig.gelu ("none": the exact erf GELU)."""

# Each family's defaults for keys a config.json may leave out (those of transformers' config classes).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 2048},
    "mistral": {
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
    },
    "qwen2": {"rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768},
    "qwen3": {"rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768},
    "gpt_neox": {
        "layer_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "max_position_embeddings": 2048,
        "partial_rotary_factor": 0.25,
        "use_parallel_residual": True,
        "attention_bias": True,
        "hidden_act": "gelu",
    },
}


GPT2_KEYS = {
    "vocab_size": "vocab_size",
    "max_seq_len": "n_positions",
    "d_model": "n_embd",
    "n_heads": "n_head",
    "n_layers": "n_layer",
    "d_mlp": "n_inner (null: 4·n_embd)",
    "norm_eps": "layer_norm_epsilon",
    "gelu": "activation_function",
    "scale_attention": "scale_attn_weights",
}
"""Where each ModelConfig field comes from in a GPT2Config."""


def is_hf_config(raw: dict[str, Any]) -> bool:
    """Whether a parsed JSON object is a Hugging Face config (it names its ``model_type``)."""
    return isinstance(raw.get("model_type"), str)


def hf_config(
    raw: dict[str, Any], where: str, error: type[ToolkitError] = ConfigError
) -> tuple[dict[str, Any], dict[str, str]]:
    """ModelConfig fields of any supported Hugging Face ``config.json`` (GPT-2 or a family), and the
    config key each came from."""
    if raw.get("model_type") == "gpt2":
        return gpt2_config(raw, where, error), dict(GPT2_KEYS)
    return family_config(raw, where, error)


def gpt2_config(raw: dict[str, Any], where: str, error: type[ToolkitError] = ConfigError) -> dict[str, Any]:
    """GPT2Config's fields as ModelConfig fields; what the toolkit's model cannot be is refused."""
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if raw.get(flag):
            raise error(
                f"{where} sets {flag}: true, which the toolkit's model does not implement; loading it "
                "would give a subtly different model"
            )
    gelu = _gelu_form(raw.get("activation_function", "gelu_new"), "activation_function", where, error)
    try:
        d_model = int(raw["n_embd"])
        inner = raw.get("n_inner")
        return {
            "vocab_size": int(raw["vocab_size"]),
            "max_seq_len": int(raw["n_positions"]),
            "d_model": d_model,
            "n_heads": int(raw["n_head"]),
            "n_layers": int(raw["n_layer"]),
            "d_mlp": 4 * d_model if inner is None else int(inner),
            "norm_eps": float(raw.get("layer_norm_epsilon", 1e-5)),
            "gelu": gelu,
            "scale_attention": bool(raw.get("scale_attn_weights", True)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise error(
            f"{where} lacks a valid GPT-2 size ({exc}); write it again with save_pretrained"
        ) from None


def _gelu_form(activation: object, key: str, where: str, error: type[ToolkitError]) -> str:
    """ModelConfig.gelu for a Hugging Face activation name, or ``error`` naming the key when the
    toolkit's model has no such GELU."""
    if activation not in HF_ACTIVATIONS:
        raise error(
            f"{where}: {key} {activation!r} is not a GELU the toolkit's model has "
            f"({', '.join(HF_ACTIVATIONS)})"
        )
    return HF_ACTIVATIONS[str(activation)]


def family_config(
    raw: dict[str, Any], where: str, error: type[ToolkitError] = ConfigError
) -> tuple[dict[str, Any], dict[str, str]]:
    """ModelConfig fields of a Llama-family or GPT-NeoX ``config.json``, and the key each came from.

    Raises ``error`` naming what the model cannot express: a mixture of experts, logit soft-capping,
    an unknown or unimplemented RoPE type, another activation; an unknown ``model_type``.
    """
    model_type = raw.get("model_type")
    architectures = ", ".join(map(str, raw.get("architectures") or [])) or "unknown architecture"
    if model_type in MIXTURES_OF_EXPERTS or any(raw.get(key) for key in EXPERT_KEYS):
        raise error(
            f"{where} describes a mixture of experts ({model_type}, {architectures}); the toolkit's model "
            "has one dense MLP per block and cannot express it"
        )
    if model_type not in FAMILIES:
        raise error(
            f"{where} describes a {model_type or 'model without model_type'} model ({architectures}); the "
            f"toolkit's model expresses gpt2, {', '.join(FAMILIES)}"
        )
    for key in SOFTCAP_KEYS:
        if raw.get(key) is not None:
            raise error(
                f"{where} sets {key}={raw[key]} (logit soft-capping), which the toolkit's model does not "
                "implement; it cannot load this model"
            )
    values = {**_DEFAULTS[model_type], **{k: v for k, v in raw.items() if v is not None}}
    try:
        return _read_family(model_type, values, where, error)
    except (KeyError, TypeError, ValueError) as exc:
        raise error(
            f"{where} lacks a valid {model_type} setting ({exc}); write it again with save_pretrained"
        ) from None


def _read_family(
    model_type: str, raw: dict[str, Any], where: str, error: type[ToolkitError]
) -> tuple[dict[str, Any], dict[str, str]]:
    d_model, n_heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    fields: dict[str, Any] = {
        "vocab_size": int(raw["vocab_size"]),
        "max_seq_len": int(raw["max_position_embeddings"]),
        "d_model": d_model,
        "n_heads": n_heads,
        "n_layers": int(raw["num_hidden_layers"]),
        "d_mlp": int(raw["intermediate_size"]),
        "positions": "rope",
        "tied_head": bool(raw["tie_word_embeddings"]),
    }
    sources = {
        "vocab_size": "vocab_size",
        "max_seq_len": "max_position_embeddings",
        "d_model": "hidden_size",
        "n_heads": "num_attention_heads",
        "n_layers": "num_hidden_layers",
        "d_mlp": "intermediate_size",
        "positions": f"model_type {model_type}: RoPE",
        "tied_head": "tie_word_embeddings",
    }
    head_dim = raw.get("head_dim")
    if head_dim is not None and int(head_dim) * n_heads != d_model:
        fields["head_size"], sources["head_size"] = int(head_dim), "head_dim"
    if model_type == "gpt_neox":
        _read_gpt_neox(raw, fields, sources, where, error)
    else:
        _read_llama_like(model_type, raw, fields, sources, where, error)
    _read_rope(raw, fields, sources, where, error)
    return fields, sources


def _read_gpt_neox(
    raw: dict[str, Any],
    fields: dict[str, Any],
    sources: dict[str, str],
    where: str,
    error: type[ToolkitError],
) -> None:
    gelu = _gelu_form(raw["hidden_act"], "hidden_act", where, error)
    bias = bool(raw["attention_bias"])
    fields |= {
        "norm": "torch",
        "norm_eps": float(raw["layer_norm_eps"]),
        "gelu": gelu,
        "residual": "parallel" if raw["use_parallel_residual"] else "standard",
        "qkv_bias": bias,
        "out_bias": bias,
    }
    sources |= {
        "norm": "model_type gpt_neox: LayerNorm",
        "norm_eps": "layer_norm_eps",
        "gelu": "hidden_act",
        "residual": "use_parallel_residual",
        "qkv_bias": "attention_bias",
        "out_bias": "attention_bias",
    }


def _read_llama_like(
    model_type: str,
    raw: dict[str, Any],
    fields: dict[str, Any],
    sources: dict[str, str],
    where: str,
    error: type[ToolkitError],
) -> None:
    activation = str(raw.get("hidden_act", "silu"))
    if activation != "silu":
        raise error(
            f"{where}: hidden_act {activation!r} in a gated MLP; the toolkit's gated MLP is SiLU's (SwiGLU) "
            "only"
        )
    if model_type == "llama":  # attention_bias: q, k, v and o; mlp_bias: the three MLP projections
        qkv_bias = out_bias = bool(raw.get("attention_bias", False))
        mlp_bias, bias_source = bool(raw.get("mlp_bias", False)), "attention_bias"
    elif model_type == "qwen3":
        qkv_bias = out_bias = bool(raw.get("attention_bias", False))
        mlp_bias, bias_source = False, "attention_bias"
    else:  # Qwen2: biases on q, k, v only; Mistral: none
        qkv_bias, out_bias, mlp_bias = model_type == "qwen2", False, False
        bias_source = f"model_type {model_type}"
    fields |= {
        "norm": "rms",
        "norm_eps": float(raw["rms_norm_eps"]),
        "mlp": "swiglu",
        "n_kv_heads": int(raw.get("num_key_value_heads") or fields["n_heads"]),
        "qkv_bias": qkv_bias,
        "out_bias": out_bias,
        "mlp_bias": mlp_bias,
        "qk_norm": model_type == "qwen3",
    }
    sources |= {
        "norm": f"model_type {model_type}: RMSNorm",
        "norm_eps": "rms_norm_eps",
        "mlp": f"model_type {model_type}: gated SiLU",
        "n_kv_heads": "num_key_value_heads",
        "qkv_bias": bias_source,
        "out_bias": bias_source,
        "mlp_bias": "mlp_bias" if model_type == "llama" else f"model_type {model_type}",
        "qk_norm": f"model_type {model_type}",
    }
    window = raw.get("sliding_window")
    uses_window = raw.get("use_sliding_window", model_type == "mistral")
    layer_types = raw.get("layer_types")
    if isinstance(layer_types, list) and "sliding_attention" not in layer_types and model_type != "mistral":
        uses_window = False
    if uses_window and window is not None:
        fields["sliding_window"], sources["sliding_window"] = int(window), "sliding_window"


def _read_rope(
    raw: dict[str, Any],
    fields: dict[str, Any],
    sources: dict[str, str],
    where: str,
    error: type[ToolkitError],
) -> None:
    """RoPE's theta, rotated fraction and scaling, from either config style."""
    parameters = raw.get("rope_parameters")
    if isinstance(parameters, dict):  # transformers 5
        style = "rope_parameters"
        scaling: dict[str, Any] = dict(parameters)
        theta = parameters.get("rope_theta", raw.get("rope_theta", 10000.0))
        fraction = parameters.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
        theta_key, fraction_key = "rope_parameters.rope_theta", "rope_parameters.partial_rotary_factor"
    else:  # what the Hub holds (transformers 4.x)
        style = "rope_scaling"
        scaling = dict(raw.get("rope_scaling") or {})
        theta_key = "rope_theta" if "rope_theta" in raw else "rotary_emb_base"
        theta = raw.get("rope_theta", raw.get("rotary_emb_base", 10000.0))
        fraction_key = "rotary_pct" if "rotary_pct" in raw else "partial_rotary_factor"
        fraction = raw.get("rotary_pct", raw.get("partial_rotary_factor", 1.0))
    fields["rope_theta"], sources["rope_theta"] = float(theta), theta_key
    if float(fraction) != 1.0:
        fields["rotary_fraction"], sources["rotary_fraction"] = float(fraction), fraction_key
    rope_type = str(scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type == "default":
        return
    if rope_type == "yarn":
        raise error(
            f"{where}: {style} rope_type 'yarn' (YaRN's scaled and attention-tempered frequencies) is not "
            "implemented by the toolkit's model; it cannot load this model"
        )
    if rope_type not in ("linear", "llama3"):
        raise error(
            f"{where}: {style} rope_type {rope_type!r} is a RoPE scaling the toolkit's model does not "
            "implement (it computes default, linear and llama3 exactly)"
        )
    fields["rope_scaling"], sources["rope_scaling"] = rope_type, f"{style}.rope_type"
    fields["rope_factor"], sources["rope_factor"] = float(scaling["factor"]), f"{style}.factor"
    if rope_type == "llama3":
        for name, key in (
            ("rope_low_freq_factor", "low_freq_factor"),
            ("rope_high_freq_factor", "high_freq_factor"),
            ("rope_original_max_seq_len", "original_max_position_embeddings"),
        ):
            value = scaling[key]
            fields[name] = int(value) if name == "rope_original_max_seq_len" else float(value)
            sources[name] = f"{style}.{key}"
