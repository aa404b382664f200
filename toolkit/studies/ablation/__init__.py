"""What each architecture change of docs/reference.md does to a trained model's outputs, to its
next-token loss on real text, and to its latency.

- ``variants``: the changes as variants of a base config, and models holding the base weights
  with a variant's architecture (every variant has exactly the base weights).
- ``outputs``: base minus variant over all logits of all examples, in float64, against the base
  model's own float32 noise.
- ``latency``: the baseline, an A/A control and every variant timed interleaved on one shared copy
  of the weights; Holm-adjusted verdicts, each with the smallest change it could have detected.
- ``study``: :func:`run_ablation`, which runs the three (and the next-token loss on real text,
  paired window by window and Holm-adjusted) and returns one :class:`AblationResult`.
"""

from __future__ import annotations

from toolkit.studies.ablation.latency import (
    BASELINE,
    LatencyChange,
    LatencyStudy,
    measure_latency_changes,
    sharing_forwards,
)
from toolkit.studies.ablation.outputs import OutputChange, logits_of, measure_output_changes, output_change
from toolkit.studies.ablation.study import AblationResult, AblationRow, measure_text_losses, run_ablation
from toolkit.studies.ablation.variants import (
    CLASSIC_EPS,
    Variant,
    classic_variants,
    copy_model,
    eps_variant,
    format_eps,
    gelu_variant,
    left_out_of_classic,
    no_scale_variant,
    norm_variant,
    not_applicable,
    residual_variant,
    rope_theta_variant,
    select_variants,
    variant_model,
    weight_sharing_norms,
)

__all__ = [
    "BASELINE",
    "CLASSIC_EPS",
    "AblationResult",
    "AblationRow",
    "LatencyChange",
    "LatencyStudy",
    "OutputChange",
    "Variant",
    "classic_variants",
    "copy_model",
    "eps_variant",
    "format_eps",
    "gelu_variant",
    "left_out_of_classic",
    "logits_of",
    "measure_latency_changes",
    "measure_output_changes",
    "measure_text_losses",
    "no_scale_variant",
    "norm_variant",
    "not_applicable",
    "output_change",
    "residual_variant",
    "rope_theta_variant",
    "run_ablation",
    "select_variants",
    "sharing_forwards",
    "variant_model",
    "weight_sharing_norms",
]
