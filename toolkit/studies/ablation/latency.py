"""Each variant's forward latency against the baseline's, from one interleaved run.

The timing engine (``toolkit.timing.compare``) times the baseline, an A/A control (the baseline's
architecture as an arm of its own) and every variant interleaved, every arm holding one shared copy
of the weights; the variants' verdicts are Holm-adjusted as one family, and each states the
smallest change the run could have detected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from toolkit.config import ModelConfig
from toolkit.errors import ConfigError
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.studies.ablation.variants import Variant, copy_model
from toolkit.studies.settings import ForwardTiming
from toolkit.timing.engine import compare
from toolkit.timing.machine import capture_context
from toolkit.timing.stats import Caution, Comparison, aa_name
from toolkit.weights.loader import build_model

BASELINE = "baseline"


@dataclass(frozen=True)
class LatencyChange:
    """A variant's forward latency against the baseline's, from one interleaved run.

    ``base_ms`` and ``variant_ms`` are medians; ``diff_pct`` is the median of the per-round paired
    ratios minus one, with the 95% CI of that median (order statistics), and
    ``diff_ms = base_ms * diff_pct / 100`` (so the two agree). ``significant_raw``: the sign test
    rejects "no change" at 5% (the CI excludes zero); ``significant``: still so after Holm's
    adjustment over the variants timed together (``p_adjusted``). ``detectable_pct``: the smallest
    change this run would find 80% of the time.
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
    fns = sharing_forwards(copy_model(base_model, device, dtype), configs, ids)
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
