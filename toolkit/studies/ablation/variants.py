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

from toolkit.config import GELU_VARIANTS, NORM_VARIANTS, RESIDUAL_VARIANTS, ModelConfig
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
) -> list[Variant]:
    """The variants the flags ask for, in a fixed order; no flag at all means the classic suite.

    A change that would leave ``base`` as it is (an eps equal to the base eps, gelu "none" on an
    exact-GELU model, ...) is refused: its "ablation" would compare the model with itself.
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
    if not variants:
        variants = classic_variants(base)
    for variant in variants:
        reason = not_applicable(variant, base)
        if reason is not None:
            raise ConfigError(f"variant '{variant.name}' does not apply to this model: {reason}")
        if variant.config(base) == base:
            field_name, value = next(iter(variant.changes.items()))
            raise ConfigError(
                f"variant '{variant.name}' leaves the model unchanged ({field_name} is already "
                f"{value!r} in the base config); choose a different value"
            )
        if "norm" in variant.changes and variant.changes["norm"] not in weight_sharing_norms(base):
            raise ConfigError(
                f"variant '{variant.name}' has other parameters than the checkpoint's norm, so it cannot run "
                f"with the same weights; norms that share them: {', '.join(weight_sharing_norms(base))}"
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
