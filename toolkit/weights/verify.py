"""Verification: how far a model's logits are from the reference examples, and the head-count search."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from toolkit.config import ModelConfig
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.weights.examples import Example


@dataclass(frozen=True)
class ExampleResult:
    """How far the loaded model's logits are from one example's reference logits."""

    index: int
    seq_len: int
    max_abs_diff: float
    rmse: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeadTrial:
    """One head count tried in the search; a failed one stops at the first example it misses."""

    n_heads: int
    max_abs_diff: float  # over the examples run
    examples_run: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def compare_examples(
    model: Transformer,
    examples: Sequence[Example],
    atol: float,
    stop_at_failure: bool = False,
    progress: ProgressCallback | None = None,
) -> list[ExampleResult]:
    """Run every example (shortest first) and compare with its logits in float64; sorted by index."""
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: examples[i].seq_len)
    results: list[ExampleResult] = []
    for done, i in enumerate(order):
        example = examples[i]
        logits = model(example.input_ids.to(device))[0]  # (S, V)
        diff = logits.detach().to("cpu", torch.float64) - example.logits.to(torch.float64)
        max_abs = float(diff.abs().max())
        rmse = float(diff.pow(2).mean().sqrt())
        passed = max_abs <= atol  # NaN never passes
        results.append(ExampleResult(i, example.seq_len, max_abs, rmse, passed))
        if progress is not None:
            progress(done + 1, len(order), f"example {i} (S={example.seq_len})")
        if stop_at_failure and not passed:
            break
    return sorted(results, key=lambda r: r.index)


def max_diff(results: Sequence[ExampleResult]) -> float:
    diffs = [r.max_abs_diff for r in results]
    return max(diffs, key=lambda d: math.inf if math.isnan(d) else d) if diffs else math.nan


def search_heads(
    build: Callable[[int], Transformer],
    d_model: int,
    examples: Sequence[Example],
    atol: float,
    progress: ProgressCallback | None = None,
) -> tuple[int, list[HeadTrial], list[ExampleResult]]:
    """Try every divisor of d_model as the head count; keep the one that reproduces the examples.

    Returns the chosen head count, every trial, and the chosen model's per-example results. When no
    divisor reproduces them, the closest is kept (and fails); when several do (e.g. only length-1
    examples, where attention cannot tell heads apart), the default head count is kept if among
    them, else the smallest.
    """
    candidates = [h for h in range(1, d_model + 1) if d_model % h == 0]
    trials: list[HeadTrial] = []
    results_of: dict[int, list[ExampleResult]] = {}
    for done, heads in enumerate(candidates):
        if progress is not None:
            progress(done, len(candidates), f"trying n_heads={heads}")
        results = compare_examples(build(heads), examples, atol, stop_at_failure=True)
        passed = len(results) == len(examples) and all(r.passed for r in results)
        trials.append(HeadTrial(heads, max_diff(results), len(results), passed))
        results_of[heads] = results
    if progress is not None:
        progress(len(candidates), len(candidates), "head-count search done")
    matching = [t.n_heads for t in trials if t.passed]
    if matching:
        chosen = ModelConfig.n_heads if ModelConfig.n_heads in matching else matching[0]
        return chosen, trials, results_of[chosen]
    closest = min(trials, key=lambda t: math.inf if math.isnan(t.max_abs_diff) else t.max_abs_diff).n_heads
    return closest, trials, compare_examples(build(closest), examples, atol)
