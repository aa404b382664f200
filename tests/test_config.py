"""ModelConfig: reference defaults, validation messages, and loading from JSON and TOML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolkit import ModelConfig, load_config
from toolkit.config import from_dict
from toolkit.errors import ConfigError


def test_defaults_are_the_reference_model() -> None:
    """The defaults are SPEC.md's reference configuration."""
    config = ModelConfig()
    assert (config.vocab_size, config.max_seq_len, config.d_model) == (512, 1024, 256)
    assert (config.n_heads, config.n_layers, config.d_mlp, config.head_dim) == (2, 3, 1280, 128)
    assert config.norm_eps == 1e-5
    assert (config.gelu, config.scale_attention, config.residual, config.norm) == (
        "none",
        True,
        "standard",
        "torch",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_heads": 3}, "not divisible by n_heads=3"),
        ({"d_model": 0}, "d_model must be at least 1"),
        ({"n_layers": -1}, "n_layers must be at least 1"),
        ({"vocab_size": 2.5}, "vocab_size must be an integer"),
        ({"norm_eps": 0.0}, "norm_eps must be a positive number"),
        ({"norm_eps": -1e-5}, "norm_eps must be a positive number"),
        ({"norm_eps": float("nan")}, "norm_eps must be a positive number"),
        ({"gelu": "relu"}, "unknown gelu 'relu'; valid values: none, tanh"),
        ({"residual": "skip"}, "unknown residual 'skip'; valid values: standard, input-skip"),
        ({"norm": "magic"}, "unknown norm 'magic'"),
        ({"scale_attention": "yes"}, "scale_attention must be true or false"),
    ],
)
def test_invalid_configs_say_what_is_wrong(changes: dict[str, object], message: str) -> None:
    """Each impossible config raises ConfigError naming the field and what would be valid."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        ModelConfig().replace(**changes)


def test_head_error_lists_valid_head_counts() -> None:
    """The divisibility error suggests head counts that would work."""
    with pytest.raises(ConfigError, match="divisors of d_model: 1, 2, 3, 4, 6, 8, 12, 24"):
        ModelConfig(d_model=24, n_heads=5)


def test_unknown_keys_are_refused() -> None:
    """A typo in a config key is an error, not silently ignored."""
    with pytest.raises(ConfigError, match=r"unknown config key.*layer_norm_eps"):
        from_dict({"layer_norm_eps": 1e-4})


def test_config_is_frozen() -> None:
    """Configs cannot be changed in place; replace() makes a validated copy."""
    config = ModelConfig()
    with pytest.raises(AttributeError):
        config.norm_eps = 1e-4  # type: ignore[misc]
    assert config.replace(norm_eps=1e-4).norm_eps == 1e-4
    assert config.norm_eps == 1e-5


def test_loads_json_and_toml(tmp_path: Path) -> None:
    """JSON and TOML files give the same config."""
    (tmp_path / "c.json").write_text('{"d_model": 64, "n_heads": 4, "residual": "parallel"}')
    (tmp_path / "c.toml").write_text('d_model = 64\nn_heads = 4\nresidual = "parallel"\n')
    expected = ModelConfig(d_model=64, n_heads=4, residual="parallel")
    assert load_config(tmp_path / "c.json") == expected
    assert load_config(tmp_path / "c.toml") == expected


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.json", None, "does not exist"),
        ("folder.json", "DIR", "is a directory, not a file"),
        ("empty.json", "", "is empty"),
        ("bad.json", '{"d_model": ', "not valid JSON"),
        ("bad.toml", "d_model = = 3", "not valid TOML"),
        ("list.json", "[1, 2]", "must hold one table"),
        ("c.yaml", "d_model: 3", "must end in .json or .toml"),
        ("heads.json", '{"n_heads": 7}', "not divisible"),
    ],
)
def test_bad_config_files(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    """Unreadable or malformed config files raise ConfigError with the reason."""
    path = tmp_path / name
    if text == "DIR":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
