"""The architecture changes of docs/reference.md as variants of a base config, and the models that
hold the base weights with a variant's architecture.

A variant is the base config with one field changed (``ModelConfig.replace``); it is built as its
own :class:`Transformer` and given the base model's state dict, so every variant has exactly the
base weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toolkit.config import (
    GELU_VARIANTS,
    MLP_VARIANTS,
    NORM_VARIANTS,
    POSITION_VARIANTS,
    RESIDUAL_VARIANTS,
    ModelConfig,
)
from toolkit.errors import ConfigError, setting
from toolkit.model import Transformer, make_norm

CLASSIC_EPS = 1e-4
"""The eps of the classic study (docs/reference.md: LayerNorm eps 1e-5 -> 1e-4)."""


def format_eps(eps: float) -> str:
    """``1e-4`` rather than ``0.0001`` or ``1e-04``."""
    return np.format_float_scientific(eps, trim="-", exp_digits=1)


@dataclass(frozen=True)
class Variant:
    """One architecture change: a short name and the ModelConfig fields it sets."""

    name: str
    changes: dict[str, Any]

    def config(self, base: ModelConfig) -> ModelConfig:
        """The base config with this change applied (validated like any config)."""
        return base.replace(**self.changes)


def eps_variant(eps: float) -> Variant:
    return Variant(f"eps {format_eps(eps)}", {"norm_eps": eps})


def no_scale_variant() -> Variant:
    return Variant("no-scale", {"scale_attention": False})


def gelu_variant(gelu: str) -> Variant:
    return Variant(f"gelu {gelu}", {"gelu": gelu})


def residual_variant(residual: str) -> Variant:
    return Variant(f"residual {residual}", {"residual": residual})


def norm_variant(norm: str) -> Variant:
    return Variant(f"norm {norm}", {"norm": norm})


def rope_theta_variant(theta: float) -> Variant:
    return Variant(f"rope-theta {format_eps(theta) if theta < 1 else f'{theta:g}'}", {"rope_theta": theta})


def position_variant(positions: str) -> Variant:
    return Variant(f"position {positions}", {"positions": positions})


def ffn_variant(base: ModelConfig, mlp: str) -> Variant:
    """The MLP form ``mlp``; a gated MLP (three matrices) gets 2/3 of the base's width, so that the
    parameter count matches a two-matrix GELU MLP's."""
    if mlp == "swiglu" and base.mlp == "gelu":
        width = max(1, round(2 * base.d_mlp / 3))
        return Variant(f"ffn swiglu (d_mlp {width})", {"mlp": "swiglu", "d_mlp": width})
    if mlp == "gelu" and base.mlp == "swiglu":
        width = max(1, round(3 * base.d_mlp / 2))
        return Variant(f"ffn gelu (d_mlp {width})", {"mlp": "gelu", "d_mlp": width})
    return Variant(f"ffn {mlp}", {"mlp": mlp})


def kv_heads_variant(kv_heads: int) -> Variant:
    return Variant(f"kv-heads {kv_heads}", {"n_kv_heads": kv_heads})


TRAINING_FIELDS = ("positions", "mlp", "n_kv_heads")
"""Config fields whose change gives the model other weights: only a model trained with it can judge it."""


def needs_training(variant: Variant, base: ModelConfig) -> str | None:
    """Why ``variant`` cannot hold ``base``'s weights (so only training from scratch can judge it)."""
    changed = [name for name in TRAINING_FIELDS if name in variant.changes]
    if changed:
        return f"it changes the weights themselves ({', '.join(changed)})"
    if "norm" in variant.changes and variant.changes["norm"] not in weight_sharing_norms(base):
        return "its norm has other parameters than the checkpoint's"
    return None


def classic_variants(base: ModelConfig | None = None) -> list[Variant]:
    """The classic suite (docs/reference.md): eps 1e-4, no-scale, tanh GELU and the three residual
    wirings; for another ``base``, the wirings other than its own and only the changes that apply to
    it (a gated MLP has no GELU)."""
    base = base if base is not None else ModelConfig()
    suite = [
        eps_variant(CLASSIC_EPS),
        no_scale_variant(),
        gelu_variant("tanh"),
        *(residual_variant(r) for r in RESIDUAL_VARIANTS if r != base.residual),
    ]
    return [variant for variant in suite if not_applicable(variant, base) is None]


def left_out_of_classic(base: ModelConfig) -> list[str]:
    """The classic variants that do not apply to ``base`` (so :func:`classic_variants` drops them)."""
    return [variant.name for variant in classic_variants() if not_applicable(variant, base) is not None]


def not_applicable(variant: Variant, base: ModelConfig) -> str | None:
    """Why ``variant`` cannot change ``base`` with the same weights, or None when it can."""
    if "gelu" in variant.changes and base.mlp != "gelu":
        return f"the model's MLP is the gated SiLU ({base.mlp}), which has no GELU"
    if "rope_theta" in variant.changes and base.positions != "rope":
        return "the model has a learned position table, no rotary embeddings"
    return None


def select_variants(
    base: ModelConfig,
    eps: float | None = None,
    no_scale: bool = False,
    gelu: str | None = None,
    residuals: Sequence[str] = (),
    norm: str | None = None,
    rope_theta: float | None = None,
    *,
    positions: str | None = None,
    ffn: str | None = None,
    kv_heads: int | None = None,
    train: bool = False,
) -> list[Variant]:
    """The variants the flags ask for, in a fixed order; no flag at all means the classic suite.

    A change that would leave ``base`` as it is (an eps equal to the base eps, gelu "none" on an
    exact-GELU model, ...) is refused: its "ablation" would compare the model with itself. Without
    ``train``, so is a change that needs other weights (positions, MLP form, kv heads, a norm with
    other parameters): only a model trained with it can judge it.
    """
    variants: list[Variant] = []
    if eps is not None:
        variants.append(eps_variant(eps))
    if no_scale:
        variants.append(no_scale_variant())
    if gelu is not None:
        _check_choice("gelu", gelu, GELU_VARIANTS)
        variants.append(gelu_variant(gelu))
    for residual in dict.fromkeys(residuals):  # keeps order, drops repeats
        _check_choice("residual", residual, RESIDUAL_VARIANTS)
        variants.append(residual_variant(residual))
    if norm is not None:
        _check_choice("norm", norm, NORM_VARIANTS)
        variants.append(norm_variant(norm))
    if rope_theta is not None:
        if not (0 < rope_theta < float("inf")):
            raise ConfigError(f"{setting('rope_theta')} must be a positive number, got {rope_theta}")
        variants.append(rope_theta_variant(rope_theta))
    if positions is not None:
        _check_choice("position", positions, POSITION_VARIANTS)
        variants.append(position_variant(positions))
    if ffn is not None:
        _check_choice("ffn", ffn, MLP_VARIANTS)
        variants.append(ffn_variant(base, ffn))
    if kv_heads is not None:
        variants.append(kv_heads_variant(kv_heads))
    if not variants:
        variants = classic_variants(base)
    for variant in variants:
        reason = not_applicable(variant, base)
        if reason is not None:
            raise ConfigError(f"variant '{variant.name}' does not apply to this model: {reason}")
        variant.config(base)  # a config that cannot exist (kv heads not dividing heads) is refused here
        if variant.config(base) == base:
            field_name, value = next(iter(variant.changes.items()))
            raise ConfigError(
                f"variant '{variant.name}' leaves the model unchanged ({field_name} is already "
                f"{value!r} in the base config); choose a different value"
            )
        if train:
            continue
        if "norm" in variant.changes and variant.changes["norm"] not in weight_sharing_norms(base):
            raise ConfigError(
                f"variant '{variant.name}' has other parameters than the checkpoint's norm, so it cannot run "
                f"with the same weights; norms that share them: {', '.join(weight_sharing_norms(base))}; "
                f"or add {setting('train')} to train base and variant from scratch"
            )
        reason = needs_training(variant, base)
        if reason is not None:
            raise ConfigError(
                f"variant '{variant.name}' cannot run with the checkpoint's weights: {reason}; add "
                f"{setting('train')} to train base and variant from scratch and compare them"
            )
    return variants


def weight_sharing_norms(base: ModelConfig) -> list[str]:
    """The norms of NORM_VARIANTS with exactly the parameters (names, shapes) of ``base``'s norm."""
    reference = _norm_parameter_shapes(base)
    return [norm for norm in NORM_VARIANTS if _norm_parameter_shapes(base.replace(norm=norm)) == reference]


def _norm_parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of ``config``'s norm layer, built on the meta device (instant)."""
    with torch.device("meta"):
        norm = make_norm(config)
    return {name: tuple(tensor.shape) for name, tensor in norm.state_dict().items()}


def _check_choice(flag: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {setting(flag)} value {value!r}; valid values: {', '.join(valid)}")


def variant_model(base_model: Transformer, variant: Variant) -> Transformer:
    """A model with ``variant``'s architecture and exactly ``base_model``'s weights, in eval mode."""
    parameter = next(base_model.parameters())
    with torch.device(parameter.device):
        model = Transformer(variant.config(base_model.config))
    model = model.to(parameter.dtype)
    missing, unexpected = model.load_state_dict(base_model.state_dict(), strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"variant '{variant.name}' cannot hold the base weights: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.eval()


def copy_model(model: Transformer, device: torch.device, dtype: torch.dtype) -> Transformer:
    """A copy of ``model`` (same architecture and weights) on ``device`` in ``dtype``, in eval mode."""
    with torch.device(device):
        copy = Transformer(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to(dtype).eval()
