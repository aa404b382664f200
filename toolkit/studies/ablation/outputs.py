"""How far each variant's logits move: base minus variant over all logits of all examples.

The forward passes run in float64 on the CPU (so the numbers measure the architecture change, not
float32 rounding) and so do the metrics; each change also carries the base model's own float32
noise on the same inputs, below which a change is not an effect one could see in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from toolkit.errors import InputError
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.signals import stop_requested
from toolkit.studies.ablation.variants import Variant, copy_model, variant_model


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
    base = copy_model(base_model, torch.device("cpu"), dtype)
    total = len(variants) + 1
    if progress is not None:
        progress(0, total, "outputs: baseline")
    base_logits = logits_of(base, inputs)
    noise = output_change(
        base_logits, logits_of(copy_model(base, torch.device("cpu"), torch.float32), inputs)
    )
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
