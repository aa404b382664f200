"""Verification: how far a model's logits are from the reference examples, and the hypothesis search
(head count × GELU form × LayerNorm eps) for checkpoints that record no config."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from toolkit.config import ModelConfig, divisors
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.signals import stop_requested
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
    search = search_hypotheses(
        lambda heads, _gelu, _eps: build(heads),
        d_model,
        examples,
        atol,
        progress=progress,
        gelu_forms=(ModelConfig.gelu,),
        eps_values=(ModelConfig.norm_eps,),
        runner_up_reruns=0,
    )
    return search.chosen.n_heads, search.head_trials(), list(search.results)


RUNNER_UP_RERUNS = 4
GELU_FORMS = ("none", "tanh")  # exact (erf) GELU, and its tanh approximation
EPS_CANDIDATES = (1e-5, 1e-6, 1e-12, 1e-4)  # GPT-2 / PyTorch, T5-style, BERT, and a loose one
"""The values the search tries for what no tensor shape records, most common first."""


def gelu_name(gelu: str) -> str:
    return "erf" if gelu == "none" else gelu


@dataclass(frozen=True)
class HypothesisTrial:
    """One (head count, GELU form, eps) tried against the examples; a miss stops at the first
    example it fails."""

    n_heads: int
    gelu: str
    norm_eps: float
    max_abs_diff: float
    examples_run: int
    passed: bool

    @property
    def label(self) -> str:
        return f"n_heads={self.n_heads}, GELU {gelu_name(self.gelu)}, eps {self.norm_eps:g}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


@dataclass(frozen=True)
class SearchResult:
    """Every hypothesis tried, the one kept, and what separates it from the next best."""

    chosen: HypothesisTrial
    trials: tuple[HypothesisTrial, ...]
    results: tuple[ExampleResult, ...]  # the chosen hypothesis on every example
    elapsed_s: float
    runner_up: HypothesisTrial | None = None  # the next closest, rerun on every example
    complete: bool = True  # False: a SIGINT / SIGTERM stopped the search before every hypothesis

    @property
    def indistinguishable(self) -> list[HypothesisTrial]:
        """Other hypotheses that reproduce the examples just as well: the examples cannot tell them apart."""
        return [t for t in self.trials if t.passed and t is not self.chosen]

    @property
    def margin(self) -> float:
        """The runner-up's max |Δ logit| over the chosen one's (> 1: the chosen fits better)."""
        runner = self.runner_up
        if runner is None or not self.chosen.max_abs_diff > 0:
            return math.nan
        return runner.max_abs_diff / self.chosen.max_abs_diff

    def head_trials(self) -> list[HeadTrial]:
        """The head counts tried at the chosen GELU form and eps."""
        return [
            HeadTrial(t.n_heads, t.max_abs_diff, t.examples_run, t.passed)
            for t in self.trials
            if (t.gelu, t.norm_eps) == (self.chosen.gelu, self.chosen.norm_eps)
        ]

    def to_dict(self) -> dict[str, Any]:
        runner = self.runner_up
        return {
            "chosen": self.chosen.to_dict(),
            "runner_up": runner.to_dict() if runner is not None else None,
            "margin": self.margin,
            "indistinguishable": [t.to_dict() for t in self.indistinguishable],
            "elapsed_s": self.elapsed_s,
            "trials": [t.to_dict() for t in self.trials],
        }


def _trial(
    n_heads: int, gelu: str, eps: float, results: Sequence[ExampleResult], n_examples: int
) -> HypothesisTrial:
    """A hypothesis' trial; it passes when every example ran and matched."""
    passed = len(results) == n_examples and all(r.passed for r in results)
    return HypothesisTrial(n_heads, gelu, eps, max_diff(results), len(results), passed)


def _rank(trial: HypothesisTrial) -> tuple[bool, float]:
    """Passing first, then the smaller max |Δ logit| (over the examples it ran)."""
    diff = math.inf if math.isnan(trial.max_abs_diff) else trial.max_abs_diff
    return (not trial.passed, diff)


def search_hypotheses(
    build: Callable[[int, str, float], Transformer],
    d_model: int,
    examples: Sequence[Example],
    atol: float,
    heads: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    gelu_forms: Sequence[str] = GELU_FORMS,
    eps_values: Sequence[float] = EPS_CANDIDATES,
    runner_up_reruns: int = RUNNER_UP_RERUNS,
) -> SearchResult:
    """Try every head count (``heads``, default every divisor of d_model) × GELU form × eps against
    the examples; keep the hypothesis that reproduces them (the defaults when several do, else the
    first in the order tried), or the closest when none does. The ``runner_up_reruns`` closest
    others are rerun on every example for the runner-up."""
    start = time.perf_counter()
    head_counts = list(heads) if heads is not None else divisors(d_model)
    grid = [(h, g, e) for h in head_counts for g in gelu_forms for e in eps_values]
    trials: list[HypothesisTrial] = []
    passed_results: dict[tuple[int, str, float], list[ExampleResult]] = {}  # ran every example
    for done, (h, g, e) in enumerate(grid):
        if trials and stop_requested() is not None:  # SIGINT / SIGTERM: decide on what was tried
            break
        if progress is not None:
            progress(done, len(grid), f"trying n_heads={h}, GELU {gelu_name(g)}, eps {e:g}")
        results = compare_examples(build(h, g, e), examples, atol, stop_at_failure=True)
        trials.append(_trial(h, g, e, results, len(examples)))
        if trials[-1].passed:
            passed_results[(h, g, e)] = list(results)
    if progress is not None:
        progress(len(grid), len(grid), "hypothesis search done")
    defaults = (ModelConfig.n_heads, ModelConfig.gelu, ModelConfig.norm_eps)
    passing = [t for t in trials if t.passed]
    default = next((t for t in passing if (t.n_heads, t.gelu, t.norm_eps) == defaults), None)
    chosen = default or (passing[0] if passing else min(trials, key=_rank))
    key = (chosen.n_heads, chosen.gelu, chosen.norm_eps)
    results = passed_results.get(key) or compare_examples(build(*key), examples, atol)
    others = [t for t in trials if t is not chosen]
    runner_up = None
    # The closest few (ties are common: one token cannot tell head counts apart) rerun on every
    # example, so that the runner-up's max |Δ| compares with the chosen one's.
    for near in sorted(others, key=_rank)[: 0 if stop_requested() is not None else runner_up_reruns]:
        full = compare_examples(build(near.n_heads, near.gelu, near.norm_eps), examples, atol)
        trial = _trial(near.n_heads, near.gelu, near.norm_eps, full, len(examples))
        if runner_up is None or _rank(trial) < _rank(runner_up):
            runner_up = trial
    elapsed_s = time.perf_counter() - start
    return SearchResult(chosen, tuple(trials), tuple(results), elapsed_s, runner_up, len(trials) == len(grid))
