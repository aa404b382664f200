"""What each architecture change of docs/reference.md does to a trained model's outputs and to its latency.

A variant is the base config with one field changed (``ModelConfig.replace``); it is built as its
own :class:`Transformer` and given the base model's state dict, so every variant has exactly the
base weights. Output change is measured on the same input ids, base minus variant, over all logits
of all examples concatenated, in float64: the forward passes run in float64 (so the numbers measure
the architecture change, not float32 rounding) and so do the metrics. Latency is measured by the
timing engine (``toolkit.timing.compare``): the baseline and every variant interleaved in one run,
with an A/A control showing the run's noise floor; the variants' verdicts (latency, text loss) are
Holm-adjusted as one family each, and each states the smallest change it could have detected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from toolkit.config import GELU_VARIANTS, NORM_VARIANTS, RESIDUAL_VARIANTS, ModelConfig
from toolkit.errors import ConfigError, InputError, setting
from toolkit.model import Transformer, make_norm
from toolkit.progress import ProgressCallback
from toolkit.signals import stop_requested
from toolkit.studies.settings import ForwardTiming
from toolkit.text.evaluation import EvalText
from toolkit.text.loss import LossChange, float32_loss_noise, judge_loss_changes, loss_change, score_text
from toolkit.timing.engine import compare
from toolkit.timing.machine import capture_context
from toolkit.timing.stats import Caution, Comparison, aa_name
from toolkit.weights.loader import build_model

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


def classic_variants() -> list[Variant]:
    """The classic suite (docs/reference.md): eps 1e-4, no-scale, tanh GELU and the three residual wirings."""
    return [
        eps_variant(CLASSIC_EPS),
        no_scale_variant(),
        gelu_variant("tanh"),
        *(residual_variant(r) for r in RESIDUAL_VARIANTS if r != "standard"),
    ]


def select_variants(
    base: ModelConfig,
    eps: float | None = None,
    no_scale: bool = False,
    gelu: str | None = None,
    residuals: Sequence[str] = (),
    norm: str | None = None,
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
    if not variants:
        variants = classic_variants()
    for variant in variants:
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


# --------------------------------------------------------------------------------------------------
# Output change
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputChange:
    """How far a variant's logits are from the base's, base minus variant, over all logits.

    Standard deviations are population ones (divide by n). ``kl`` is the mean over positions of
    KL(base || variant) of the next-token softmax, in nats; percentages are in %.
    """

    rmse: float
    mean_abs_diff: float
    std_abs_diff: float
    pct_base_greater: float
    max_abs_diff: float
    kl: float
    top1_agreement: float
    base_std: float
    n_positions: int
    n_logits: int
    float32_noise_rmse: float = float("nan")  # RMSE of the base model's own float32 vs float64 logits

    @property
    def below_float32_noise(self) -> bool:
        """The change moves the logits less than running the base model in float32 does."""
        return self.rmse < self.float32_noise_rmse

    @property
    def rmse_over_base_std(self) -> float:
        """RMSE as a fraction of the spread (standard deviation) of the base logits."""
        return self.rmse / self.base_std if self.base_std > 0 else float("nan")


def output_change(base_logits: torch.Tensor, variant_logits: torch.Tensor) -> OutputChange:
    """Compare two logit tensors ``[..., V]`` of the same shape, in float64."""
    if base_logits.shape != variant_logits.shape:
        raise InputError(
            f"logits to compare differ in shape: {list(base_logits.shape)} vs {list(variant_logits.shape)}"
        )
    if base_logits.dim() < 1 or base_logits.numel() == 0:
        raise InputError("no logits to compare")
    vocab = base_logits.shape[-1]
    base = base_logits.detach().to("cpu", torch.float64).reshape(-1, vocab)  # (N, V)
    variant = variant_logits.detach().to("cpu", torch.float64).reshape(-1, vocab)  # (N, V)
    diff = base - variant
    abs_diff = diff.abs()
    log_p = torch.log_softmax(base, dim=-1)  # (N, V)
    log_q = torch.log_softmax(variant, dim=-1)  # (N, V)
    kl_per_position = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (N,)
    top1_equal = base.argmax(dim=-1) == variant.argmax(dim=-1)  # (N,)
    return OutputChange(
        rmse=float(diff.square().mean().sqrt()),
        mean_abs_diff=float(abs_diff.mean()),
        std_abs_diff=float(abs_diff.std(correction=0)),
        pct_base_greater=100.0 * float((base > variant).to(torch.float64).mean()),
        max_abs_diff=float(abs_diff.max()),
        kl=float(kl_per_position.mean()),
        top1_agreement=100.0 * float(top1_equal.to(torch.float64).mean()),
        base_std=float(base.std(correction=0)),
        n_positions=base.shape[0],
        n_logits=base.numel(),
    )


@torch.no_grad()
def logits_of(model: Transformer, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The model's logits for each input id sequence, concatenated over positions: ``[sum S, V]``."""
    device = next(model.parameters()).device
    outputs = [model(ids.to(device).reshape(1, -1))[0] for ids in inputs]  # each (S, V)
    return torch.cat(outputs, dim=0)


def measure_output_changes(
    base_model: Transformer,
    inputs: Sequence[torch.Tensor],
    variants: Sequence[Variant],
    dtype: torch.dtype = torch.float64,
    progress: ProgressCallback | None = None,
) -> tuple[torch.Tensor, list[OutputChange]]:
    """Base logits and each variant's :class:`OutputChange`, with forward passes in ``dtype`` on CPU
    (after a SIGINT / SIGTERM under :func:`toolkit.signals.graceful`: the variants done so far).
    Each change carries the float32 noise: the RMSE between the base model's float32 and ``dtype``
    logits on the same inputs."""
    if not inputs:
        raise InputError("no input sequences to run; give examples with at least one sequence")
    base = _copy_to(base_model, torch.device("cpu"), dtype)
    total = len(variants) + 1
    if progress is not None:
        progress(0, total, "outputs: baseline")
    base_logits = logits_of(base, inputs)
    noise = output_change(base_logits, logits_of(_copy_to(base, torch.device("cpu"), torch.float32), inputs))
    changes: list[OutputChange] = []
    for done, variant in enumerate(variants, start=1):
        if changes and stop_requested() is not None:  # SIGINT / SIGTERM: the variants done so far
            break
        if progress is not None:
            progress(done, total, f"outputs: {variant.name}")
        change = output_change(base_logits, logits_of(variant_model(base, variant), inputs))
        changes.append(replace(change, float32_noise_rmse=noise.rmse))
    if progress is not None:
        progress(total, total, "outputs: done")
    return base_logits, changes


def _copy_to(model: Transformer, device: torch.device, dtype: torch.dtype) -> Transformer:
    """A copy of ``model`` (same architecture and weights) on ``device`` in ``dtype``, in eval mode."""
    with torch.device(device):
        copy = Transformer(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to(dtype).eval()


# --------------------------------------------------------------------------------------------------
# Latency and the whole study
# --------------------------------------------------------------------------------------------------


BASELINE = "baseline"


@dataclass(frozen=True)
class LatencyChange:
    """A variant's forward latency against the baseline's, from one interleaved run.

    ``base_ms`` and ``variant_ms`` are medians; ``diff_pct`` is the median of the per-round paired
    ratios minus one, with its 95% bootstrap CI, and ``diff_ms = base_ms * diff_pct / 100`` (so the
    two agree). ``significant_raw``: the sign test rejects "no change" at 5% (the CI excludes
    zero); ``significant``: still so after Holm's adjustment over the variants timed together
    (``p_adjusted``). ``detectable_pct``: the smallest change this run would find 80% of the time.
    """

    base_ms: float
    variant_ms: float
    diff_ms: float
    diff_pct: float
    ci_low_pct: float
    ci_high_pct: float
    significant: bool
    significant_raw: bool = False
    p_value: float = float("nan")
    p_adjusted: float = float("nan")
    detectable_pct: float = float("nan")
    family_size: int = 1

    @classmethod
    def from_comparison(cls, comparison: Comparison, name: str) -> LatencyChange:
        base_ms = comparison.measurements[comparison.baseline].median_ms
        difference = comparison.differences[name]
        return cls(
            base_ms=base_ms,
            variant_ms=comparison.measurements[name].median_ms,
            diff_ms=base_ms * difference.diff_pct / 100.0,
            diff_pct=difference.diff_pct,
            ci_low_pct=difference.ci_low_pct,
            ci_high_pct=difference.ci_high_pct,
            significant=difference.significant,
            significant_raw=difference.significant_raw,
            p_value=difference.p_value,
            p_adjusted=difference.p_adjusted,
            detectable_pct=difference.detectable_pct,
            family_size=difference.family_size,
        )


@dataclass(frozen=True)
class LatencyStudy:
    """How the latencies were taken: the timing input, the run's noise floor and its context."""

    seq_len: int
    batch: int
    budget_s: float
    noise_floor_pct: float
    aa_diff_pct: float
    stop_reason: str
    rounds: int
    elapsed_s: float
    context: dict[str, Any]
    target_rel_ci: float
    max_rel_iqr: float  # the widest arm's IQR / median
    max_rel_ci: float  # the widest arm's 95% CI half-width / median
    max_page_faults_per_call: float
    cautions: tuple[Caution, ...]  # the timing engine's, per arm and for the run
    arm_names: tuple[str, ...] = ()  # the variants' arms (besides the baseline and its A/A control)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["cautions"]
        return {**data, "warnings": [c.to_dict() for c in self.cautions]}


def sharing_forwards(
    base_model: Transformer, configs: Mapping[str, ModelConfig], ids: torch.Tensor
) -> dict[str, Callable[[], object]]:
    """A forward pass on ``ids`` for each named architecture, every one holding the very tensors of
    one fresh copy of ``base_model``'s weights.

    Timed arms must be exchangeable when they do the same work, and two copies of the same weights
    are not: where a copy lies in memory moved a forward pass by up to 1% for as long as it lived,
    and a model that shared its weights with another arm (a baseline timed again as its own A/A
    control) ran 5% faster than a copy, from the caches both read. Arms that read the same memory
    differ only in their architecture, which is what an ablation asks about.
    """
    parameter = next(base_model.parameters())
    weights = {key: tensor.clone() for key, tensor in base_model.state_dict().items()}
    return {
        name: functools.partial(build_model(config, weights, parameter.device), ids)
        for name, config in configs.items()
    }


def measure_latency_changes(
    base_model: Transformer,
    variants: Sequence[Variant],
    timing: ForwardTiming,
    *,
    progress: ProgressCallback | None = None,
) -> tuple[list[LatencyChange], LatencyStudy]:
    """Time the baseline and every variant interleaved in one run, with an A/A control (the
    baseline's architecture as an arm of its own), every arm holding the same weights
    (:func:`sharing_forwards`).

    The input is ``timing.batch`` random id sequences of ``timing.seq_len`` tokens (default:
    max_seq_len); ``timing.budget_s`` is the whole run's budget.
    """
    config = base_model.config
    seq_len = timing.seq_len_for(config)
    device, dtype, batch, budget_s = timing.device, timing.dtype, timing.batch, timing.budget_s
    target_rel_ci = timing.target_rel_ci
    if any(variant.name == BASELINE for variant in variants):
        raise ConfigError(f"a variant cannot be named {BASELINE!r}")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator).to(device)  # (B, S)
    configs = {BASELINE: config, aa_name(BASELINE): config}
    configs |= {variant.name: variant.config(config) for variant in variants}
    fns = sharing_forwards(_copy_to(base_model, device, dtype), configs, ids)
    control = fns.pop(aa_name(BASELINE))
    context = capture_context(device, dtype, batch=batch, seq_len=seq_len, workload="forward pass")
    comparison = compare(
        fns,
        baseline=BASELINE,
        device=device,
        aa_control=control,
        target_rel_ci=target_rel_ci,
        budget_s=budget_s,
        context=context,
        progress=progress,
    )
    aa = comparison.aa_control
    study = LatencyStudy(
        seq_len=seq_len,
        batch=batch,
        budget_s=budget_s,
        noise_floor_pct=comparison.noise_floor_pct,
        aa_diff_pct=aa.diff_pct if aa is not None else float("nan"),
        stop_reason=comparison.stop_reason,
        rounds=comparison.rounds,
        elapsed_s=comparison.elapsed_s,
        context=context.to_dict(),
        target_rel_ci=target_rel_ci,
        max_rel_iqr=max(m.rel_iqr for m in comparison.measurements.values()),
        max_rel_ci=max(m.rel_ci for m in comparison.measurements.values()),
        max_page_faults_per_call=max(m.page_faults_per_call for m in comparison.measurements.values()),
        cautions=tuple(comparison.cautions()),
        arm_names=tuple(variant.name for variant in variants),
    )
    return [LatencyChange.from_comparison(comparison, variant.name) for variant in variants], study


@dataclass(frozen=True)
class AblationRow:
    """One variant: its name, the config fields it sets, and what it did to outputs and latency."""

    change: str
    config_changes: dict[str, Any]
    output: OutputChange
    latency: LatencyChange | None
    noise_floor_pct: float | None = None  # the latency run's A/A noise floor
    text_loss: LossChange | None = None  # next-token loss on real text, variant against base

    def to_dict(self) -> dict[str, Any]:
        output = self.output
        return {
            "change": self.change,
            "config_changes": self.config_changes,
            "rmse": output.rmse,
            "rmse_over_base_std": output.rmse_over_base_std,
            "mean_abs_diff": output.mean_abs_diff,
            "std_abs_diff": output.std_abs_diff,
            "pct_base_greater": output.pct_base_greater,
            "max_abs_diff": output.max_abs_diff,
            "kl": output.kl,
            "top1_agreement": output.top1_agreement,
            "base_logits_std": output.base_std,
            "n_logits": output.n_logits,
            "float32_noise_rmse": output.float32_noise_rmse,
            "below_float32_noise": output.below_float32_noise,
            "latency": asdict(self.latency) if self.latency is not None else None,
            "latency_noise_floor_pct": self.noise_floor_pct,
            "text_loss": self.text_loss.to_dict() if self.text_loss is not None else None,
        }


@dataclass(frozen=True)
class AblationResult:
    """Every variant's output and latency change against one base model with the same weights."""

    base_config: ModelConfig
    rows: list[AblationRow]
    n_examples: int
    n_positions: int
    output_dtype: str
    latency: LatencyStudy | None
    text: dict[str, Any] | None = None  # what was scored (EvalText.describe()), when text loss was measured

    def to_dict(self) -> list[dict[str, Any]]:
        """One dict per variant: the output change, the latency change and the run's noise floor."""
        return [row.to_dict() for row in self.rows]

    def to_frame(self) -> pd.DataFrame:
        return pd.json_normalize(self.to_dict(), sep="_")


def measure_text_losses(
    base_model: Transformer,
    variants: Sequence[Variant],
    windows: torch.Tensor,
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> list[LossChange]:
    """Each variant's next-token loss on ``windows`` against the base's, paired by window (float32 on
    ``device``), judged together (Holm; the base's float32 noise); after a SIGINT / SIGTERM, the
    variants done so far."""
    base = _copy_to(base_model, device, torch.float32)
    base_score = score_text(base, windows, progress=progress, label="text loss: baseline")
    changes: list[LossChange] = []
    for variant in variants:
        if stop_requested() is not None:
            break
        model = variant_model(base, variant)
        changes.append(
            loss_change(
                base_score, score_text(model, windows, progress=progress, label=f"text loss: {variant.name}")
            )
        )
    return judge_loss_changes(changes, float32_loss_noise(base, windows, base_score))


def run_ablation(
    base_model: Transformer,
    inputs: Sequence[torch.Tensor],
    variants: Sequence[Variant],
    timing: ForwardTiming | None = None,
    *,
    text: EvalText | None = None,
    text_device: torch.device | None = None,
    progress: ProgressCallback | None = None,
) -> AblationResult:
    """Output change of every variant on ``inputs`` (float64, CPU); with ``text``, its
    next-token loss change on them; with ``timing``, its latency change."""
    if not variants:
        raise ConfigError("no variants to compare; give at least one variant flag")
    if timing is not None:
        timing.seq_len_for(base_model.config)  # refuse an impossible timing input before any work
    _, changes = measure_output_changes(base_model, inputs, variants, progress=progress)
    variants = variants[: len(changes)]  # fewer only when a signal stopped the run
    text_losses: list[LossChange | None] = [None] * len(variants)
    if text is not None and stop_requested() is None:
        device = text_device if text_device is not None else torch.device("cpu")
        measured_text = measure_text_losses(base_model, variants, text.windows, device, progress=progress)
        text_losses[: len(measured_text)] = measured_text
    latencies: list[LatencyChange | None] = [None] * len(variants)
    study = None
    if timing is not None and stop_requested() is None:  # after SIGINT / SIGTERM: the output part only
        measured, study = measure_latency_changes(base_model, variants, timing, progress=progress)
        latencies = list(measured)
    rows = [
        AblationRow(
            change=variant.name,
            config_changes=dict(variant.changes),
            output=change,
            latency=latency,
            noise_floor_pct=study.noise_floor_pct if study is not None else None,
            text_loss=text_loss,
        )
        for variant, change, latency, text_loss in zip(variants, changes, latencies, text_losses, strict=True)
    ]
    return AblationResult(
        base_config=base_model.config,
        rows=rows,
        n_examples=len(inputs),
        n_positions=changes[0].n_positions,
        output_dtype=str(torch.float64).removeprefix("torch."),
        latency=study,
        text=text.describe() if text is not None else None,
    )
