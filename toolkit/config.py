"""ModelConfig: the reference transformer's sizes and its architecture variants, validated.

Every ablation of docs/reference.md is a field here and is read by the one model in ``model.py``:
``norm_eps``, ``scale_attention``, ``gelu`` and ``residual``. None of them changes the weights,
so one checkpoint serves every variant (``config.replace(norm_eps=1e-4)``).
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
NORM_VARIANTS = ("torch", "custom", "rms", "none", "batch")
"""torch / custom LayerNorm (same function), RMSNorm, no normalisation, BatchNorm over features."""

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

    def __post_init__(self) -> None:
        for name in _SIZE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.d_model % self.n_heads != 0:
            divisors = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0]
            shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
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
        if not isinstance(self.scale_attention, bool):
            raise ConfigError(f"scale_attention must be true or false, got {self.scale_attention!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def sequence_length(self, seq_len: int | None = None) -> int:
        """``seq_len`` (default ``max_seq_len``), refused when this model cannot take it."""
        length = self.max_seq_len if seq_len is None else seq_len
        if not 1 <= length <= self.max_seq_len:
            if length < 1:
                raise InputError(f"{setting('seq_len')} must be at least 1, got {length}")
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
    """Read a config from a ``.json`` or ``.toml`` file (a flat table of ModelConfig fields)."""
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
    return from_dict(values)
