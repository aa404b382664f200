"""Does the custom LayerNorm (or RMSNorm) match PyTorch's, and what does it cost in time, memory and
training?

Four parts, each a function returning a result dataclass (``to_dict()`` for JSON, ``to_frame()``
for pandas); :func:`run_layernorm_study` runs the ones asked for.

- :func:`check_numerics`: output and input/weight/bias gradients of every implementation against
  a float64 reference computed from the same (rounded) inputs, for ordinary inputs and for a large
  mean offset, in float32 and bfloat16. A one-pass E[x²] − E[x]² LayerNorm shows the failure mode.
- :func:`measure_speed`: forward and forward+backward over a grid of (rows M, row size N), timed
  interleaved with :func:`toolkit.timing.compare` together with a plain copy of the same tensor,
  so achieved bandwidth is set against the machine's copy bandwidth measured in the same run.
- :func:`measure_memory`: bytes saved for the backward (saved-tensor hooks) and peak memory of
  one forward+backward per implementation.
- :func:`train_norms`: the same small GPT trained with each normalisation (same seed, same
  batches) on bytes of real text: speed, final validation loss, convergence, stability, and what
  the normalisation does to the hidden units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import stop_requested
from toolkit.studies.layernorm.corpus import Corpus, stdlib_corpus, text_corpus
from toolkit.studies.layernorm.implementations import (
    EPS,
    IMPLEMENTATION_LABELS,
    NORM_KINDS,
    LayerNormFn,
    autograd_layer_norm,
    autograd_rms_norm,
    implementation_label,
    implementations,
    make_inputs,
    one_pass_layer_norm,
)
from toolkit.studies.layernorm.memory import MEMORY_SHAPE, MemoryResult, MemoryRow, measure_memory
from toolkit.studies.layernorm.numerics import (
    NUMERICS_DTYPES,
    NUMERICS_OFFSETS,
    NUMERICS_SHAPE,
    NumericsResult,
    NumericsRow,
    check_numerics,
    reference_layer_norm,
    reference_rms_norm,
)
from toolkit.studies.layernorm.speed import (
    PASSES,
    SpeedResult,
    SpeedRow,
    bytes_moved,
    measure_speed,
)
from toolkit.studies.layernorm.training import (
    NORM_LABELS,
    NormRun,
    TrainingResult,
    detrended_std,
    steps_to_fraction,
    train_norms,
)
from toolkit.studies.settings import DEFAULT_SHAPES, TRAIN_NORMS, TrainingSettings
from toolkit.text.corpus import stdlib_files

__all__ = [
    "DEFAULT_SHAPES",
    "EPS",
    "IMPLEMENTATION_LABELS",
    "MEMORY_SHAPE",
    "NORM_KINDS",
    "NORM_LABELS",
    "NUMERICS_DTYPES",
    "NUMERICS_OFFSETS",
    "NUMERICS_SHAPE",
    "PASSES",
    "TRAIN_NORMS",
    "Corpus",
    "LayerNormFn",
    "LayerNormReport",
    "MemoryResult",
    "MemoryRow",
    "NormRun",
    "NumericsResult",
    "NumericsRow",
    "SpeedResult",
    "SpeedRow",
    "TrainingResult",
    "TrainingSettings",
    "autograd_layer_norm",
    "autograd_rms_norm",
    "bytes_moved",
    "check_numerics",
    "detrended_std",
    "implementation_label",
    "implementations",
    "make_inputs",
    "measure_memory",
    "measure_speed",
    "one_pass_layer_norm",
    "reference_layer_norm",
    "reference_rms_norm",
    "run_layernorm_study",
    "stdlib_corpus",
    "stdlib_files",
    "steps_to_fraction",
    "text_corpus",
    "train_norms",
]


@dataclass
class LayerNormReport:
    """The parts of the study that were run (None for those skipped)."""

    numerics: NumericsResult | None = None
    speed: SpeedResult | None = None
    memory: MemoryResult | None = None
    training: TrainingResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            name: (None if part is None else part.to_dict())
            for name, part in (
                ("numerics", self.numerics),
                ("speed", self.speed),
                ("memory", self.memory),
                ("training", self.training),
            )
        }


def run_layernorm_study(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    *,
    numerics: bool = True,
    speed: bool = True,
    memory: bool = True,
    train: bool = True,
    shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
    speed_backends: Sequence[str] | None = None,
    budget_s: float = 4.0,
    settings: TrainingSettings | None = None,
    corpus: Corpus | None = None,
    progress: ProgressCallback = no_progress,
    norm: str = "layer",
) -> LayerNormReport:
    """Run the parts asked for, in order: numerics, speed, memory, training. ``norm`` (``layer`` or
    ``rms``) is the norm the numerics, speed and memory parts study; training compares the norms of
    ``settings``.

    After a SIGINT / SIGTERM under :func:`toolkit.signals.graceful`, the part under way stops early
    with what it has and the later parts are skipped (None).
    """
    report = LayerNormReport()
    if numerics and stop_requested() is None:
        report.numerics = check_numerics(device, progress=progress, norm=norm)
    if speed and stop_requested() is None:
        report.speed = measure_speed(
            device, dtype, shapes, speed_backends, budget_s, progress=progress, norm=norm
        )
        if not report.speed.rows:  # stopped before the first shape was timed
            report.speed = None
    if memory and stop_requested() is None:
        report.memory = measure_memory(device, dtype, progress=progress, norm=norm)
    if train and stop_requested() is None:
        report.training = train_norms(device, settings, corpus, progress=progress)
        if report.training.steps_done == 0:
            report.training = None
    return report
