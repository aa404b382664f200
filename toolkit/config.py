"""ModelConfig: the reference transformer's sizes, its architecture variants and the model families.

Every ablation of docs/reference.md is a field here and is read by the one model in ``model.py``:
``norm_eps``, ``scale_attention``, ``gelu`` and ``residual``. None of them changes the weights,
so one checkpoint serves every variant (``config.replace(norm_eps=1e-4)``).

The families people download today (Llama, SmolLM, Qwen2/3, Mistral, Pythia) are a handful of
further fields, whose defaults are GPT-2's: ``n_kv_heads`` and ``head_size`` (GQA/MQA, a head size
apart from d_model / n_heads), ``positions`` with the RoPE fields, ``mlp`` (GELU or gated SiLU), the
bias switches, ``qk_norm`` (Qwen3), ``tied_head`` and ``sliding_window`` (Mistral).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError, InputError, setting
from toolkit.files import check_input_file

GELU_VARIANTS = ("none", "tanh")  # torch.nn.functional.gelu's `approximate` argument
RESIDUAL_VARIANTS = ("standard", "input-skip", "no-mlp-skip", "parallel")
NORM_VARIANTS = ("torch", "custom", "rms", "none", "batch", "rms-torch")
"""torch / custom LayerNorm (same function), RMSNorm (the toolkit's fused one; ``rms-torch``: PyTorch's,
the same function), no normalisation, BatchNorm over features."""
POSITION_VARIANTS = ("learned", "rope")
"""A learned position table added to the embeddings (GPT-2), or rotary embeddings on q and k."""
MLP_VARIANTS = ("gelu", "swiglu")
"""d -> d_mlp -> GELU -> d (GPT-2, Pythia), or the gated down(silu(gate(x)) * up(x)) (Llama family)."""
ROPE_SCALINGS = ("none", "linear", "llama3")
"""RoPE frequency scalings the model computes exactly (Hugging Face's ``rope_type``; none = default)."""

_SIZE_FIELDS = ("vocab_size", "max_seq_len", "d_model", "n_heads", "n_layers", "d_mlp")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and variants of the GPT-2-style reference model (defaults: docs/reference.md, ~3.16 M params)."""

    vocab_size: int = 512
    max_seq_len: int = 1024
    d_model: int = 256
    n_heads: int = 2
    n_layers: int = 3
    d_mlp: int = 1280
    norm_eps: float = 1e-5
    gelu: str = "none"
    scale_attention: bool = True
    residual: str = "standard"
    norm: str = "torch"
    # The model families (docs/reference.md, "Model families"); the defaults are GPT-2's.
    n_kv_heads: int | None = None  # key/value heads; None: n_heads (MHA), fewer: GQA, 1: MQA
    head_size: int | None = None  # None: d_model // n_heads
    positions: str = "learned"  # POSITION_VARIANTS
    rope_theta: float = 10000.0
    rotary_fraction: float = 1.0  # of each head's dimensions, the first ones (Pythia: 0.25)
    rope_scaling: str = "none"  # ROPE_SCALINGS
    rope_factor: float = 1.0  # linear and llama3
    rope_low_freq_factor: float = 1.0  # llama3
    rope_high_freq_factor: float = 4.0  # llama3
    rope_original_max_seq_len: int = 8192  # llama3: the context the frequencies were trained at
    mlp: str = "gelu"  # MLP_VARIANTS
    qkv_bias: bool = True
    out_bias: bool = True  # the attention's output projection
    mlp_bias: bool = True
    qk_norm: bool = False  # RMSNorm over each head of q and k before RoPE (Qwen3)
    tied_head: bool = True  # LM head = the word embeddings
    sliding_window: int | None = None  # attention window (Mistral); sequences longer are refused

    def __post_init__(self) -> None:
        for name in _SIZE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.head_size is None and self.d_model % self.n_heads != 0:
            allowed = divisors(self.d_model)
            shown = ", ".join(map(str, allowed[:12])) + (", ..." if len(allowed) > 12 else "")
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                f"choose n_heads from the divisors of d_model: {shown}"
            )
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, int | float):
            raise ConfigError(f"norm_eps must be a number, got {self.norm_eps!r}")
        if not math.isfinite(self.norm_eps) or self.norm_eps <= 0:
            raise ConfigError(f"norm_eps must be a positive number (e.g. 1e-5), got {self.norm_eps}")
        _check_choice("gelu", self.gelu, GELU_VARIANTS)
        _check_choice("residual", self.residual, RESIDUAL_VARIANTS)
        _check_choice("norm", self.norm, NORM_VARIANTS)
        for name in ("scale_attention", "qkv_bias", "out_bias", "mlp_bias", "qk_norm", "tied_head"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self._check_family_fields()

    def _check_family_fields(self) -> None:
        for name in ("n_kv_heads", "head_size", "sliding_window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")
        if self.n_heads % self.kv_heads != 0:
            raise ConfigError(
                f"n_kv_heads={self.kv_heads} does not divide n_heads={self.n_heads}; each key/value head "
                "serves a whole group of query heads: choose from "
                f"{', '.join(map(str, divisors(self.n_heads)))}"
            )
        _check_choice("positions", self.positions, POSITION_VARIANTS)
        _check_choice("mlp", self.mlp, MLP_VARIANTS)
        _check_choice("rope_scaling", self.rope_scaling, ROPE_SCALINGS)
        for name in ("rope_theta", "rotary_fraction", "rope_factor", "rope_low_freq_factor",
                     "rope_high_freq_factor"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.rotary_fraction > 1:
            raise ConfigError(f"rotary_fraction must be in (0, 1], got {self.rotary_fraction}")
        if self.positions == "rope" and (self.rotary_dims < 2 or self.rotary_dims % 2):
            raise ConfigError(
                f"RoPE rotates pairs of dimensions, but rotary_fraction={self.rotary_fraction} of "
                f"head_size={self.head_dim} gives {self.rotary_dims}; choose a fraction giving an even number"
            )
        if self.rope_scaling == "llama3" and self.rope_low_freq_factor >= self.rope_high_freq_factor:
            raise ConfigError(
                f"llama3 RoPE scaling needs rope_low_freq_factor < rope_high_freq_factor, got "
                f"{self.rope_low_freq_factor} and {self.rope_high_freq_factor}"
            )
        if isinstance(self.rope_original_max_seq_len, bool) or not isinstance(
            self.rope_original_max_seq_len, int
        ):
            raise ConfigError(
                f"rope_original_max_seq_len must be an integer, got {self.rope_original_max_seq_len!r}"
            )

    @property
    def head_dim(self) -> int:
        """The size of one attention head: ``head_size``, or d_model // n_heads."""
        return self.head_size if self.head_size is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_heads``, or n_heads (multi-head attention)."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def rotary_dims(self) -> int:
        """Dimensions of each head that RoPE rotates (the first ones), as Hugging Face rounds them."""
        return int(self.head_dim * self.rotary_fraction)

    @property
    def longest_sequence(self) -> int:
        """The longest input the model computes exactly: max_seq_len, or a narrower attention window."""
        window = self.sliding_window if self.sliding_window is not None else self.max_seq_len
        return min(self.max_seq_len, window)

    def sequence_length(self, seq_len: int | None = None) -> int:
        """``seq_len`` (default the longest the model takes), refused when this model cannot take it."""
        length = self.longest_sequence if seq_len is None else seq_len
        if not 1 <= length <= self.longest_sequence:
            if length < 1:
                raise InputError(f"{setting('seq_len')} must be at least 1, got {length}")
            if length <= self.max_seq_len:  # beyond the attention window only
                raise InputError(
                    f"{setting('seq_len')} {length} is wider than the model's sliding attention window of "
                    f"{self.sliding_window} tokens, which the toolkit's model does not implement; lower "
                    f"{setting('seq_len')} to at most {self.sliding_window}"
                )
            raise InputError(
                f"{setting('seq_len')} {length} exceeds max_seq_len={self.max_seq_len}; lower "
                f"{setting('seq_len')} or raise {setting('max_seq_len')}"
            )
        return length

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed, validated like a new config."""
        return from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending: the head counts a width allows, the kv-head counts a
    head count allows."""
    return [h for h in range(1, n + 1) if n % h == 0]


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid values: {', '.join(valid)}")


def from_dict(values: dict[str, Any]) -> ModelConfig:
    """Build a config from a mapping, refusing keys that are not config fields."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )
    return ModelConfig(**values)


def load_config(path: str | Path) -> ModelConfig:
    """Read a config from a ``.json`` or ``.toml`` file: a flat table of ModelConfig fields, or a Hugging
    Face ``config.json`` of GPT-2 or a supported family (``model_type``: llama, mistral, qwen2, qwen3,
    gpt_neox), in either config style."""
    import tomllib  # read files only: not imported at start-up

    path = check_input_file(path, "config file", "pass an existing .json or .toml file", ConfigError)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            values = json.loads(text)
        elif suffix == ".toml":
            values = tomllib.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .json or .toml, not {suffix or '(none)'}")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold one table of ModelConfig fields")
    from toolkit.families import hf_config, is_hf_config

    if is_hf_config(values):
        fields, _ = hf_config(values, str(path))
        return from_dict(fields)
    return from_dict(values)
