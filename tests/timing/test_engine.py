"""The engines: the mechanics of measure() and compare() (no timing is asserted)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import pytest
import torch

from toolkit.timing import TimingContext, aa_name, compare, measure

CPU = torch.device("cpu")


def test_measure_calls_under_inference_mode_and_reports_context() -> None:
    """measure() runs the callable under inference_mode, keeps every sample, records the context."""
    seen: list[bool] = []

    def fn() -> None:
        seen.append(torch.is_inference_mode_enabled())
        time.sleep(0.0005)

    context = TimingContext.capture(CPU, torch.float32, batch=2, seq_len=8)
    m = measure(fn, device=CPU, warmup=2, budget_s=0.05, min_samples=5, max_samples=50, context=context)
    assert all(seen)
    assert m.calls_per_sample == 1
    assert 5 <= m.n_samples <= 50
    assert len(seen) == 2 + m.n_samples  # warm-up calls plus one call per sample
    assert all(s >= 0.5 for s in m.samples_ms)  # each sleep lasts at least 0.5 ms
    assert m.stop_reason in ("target", "budget", "max_samples")
    assert m.page_faults_per_call >= 0
    assert m.context is not None
    assert m.context.batch == 2
    assert m.context.threads == torch.get_num_threads()
    json.dumps(m.to_dict())


def test_measure_stop_reasons() -> None:
    """A loose target stops at the minimum; a zero budget stops on budget; a cap stops at max_samples."""

    def fn() -> None:
        time.sleep(0.0003)

    loose = measure(fn, device=CPU, warmup=1, target_rel_ci=10.0, budget_s=30.0, min_samples=4)
    assert (loose.stop_reason, loose.n_samples) == ("target", 4)
    broke = measure(fn, device=CPU, warmup=1, target_rel_ci=0.0, budget_s=0.0, min_samples=6)
    assert (broke.stop_reason, broke.n_samples) == ("budget", 6)
    capped = measure(fn, device=CPU, warmup=1, target_rel_ci=0.0, budget_s=30.0, min_samples=3, max_samples=7)
    assert (capped.stop_reason, capped.n_samples) == ("max_samples", 7)


def test_measure_repeats_fast_calls_within_a_sample() -> None:
    """A call far below the timer's useful resolution is repeated inside each sample."""
    counter = [0]

    def fn() -> None:
        counter[0] += 1

    m = measure(fn, device=CPU, warmup=1, budget_s=0.0, min_samples=3)
    assert m.calls_per_sample > 1
    assert counter[0] == 1 + 3 * m.calls_per_sample


def test_compare_interleaves_with_rotating_order() -> None:
    """Every round calls each arm once (A/A control included), and the first arm rotates."""
    calls: list[str] = []

    def arm(name: str) -> object:
        def fn() -> None:
            calls.append(name)
            time.sleep(0.0003)

        return fn

    result = compare(
        {"a": arm("a"), "b": arm("b")}, baseline="a", device=CPU, warmup=1, budget_s=0.0, min_rounds=6
    )
    assert set(result.measurements) == {"a", "b", aa_name("a")}
    assert result.rounds == 6
    assert result.stop_reason == "budget"
    timed = calls[3:]  # after one warm-up call per arm (the A/A arm warms up "a" again)
    rounds = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert len(rounds) == 6
    assert [r[0] for r in rounds[:3]] == ["a", "b", "a"]  # rotating start: a, b, then the A/A arm (a)
    assert all(sorted(r) == ["a", "a", "b"] for r in rounds)
    assert set(result.differences) == {"b", aa_name("a")}
    assert math.isfinite(result.noise_floor_pct)
    json.dumps(result.to_dict())


def test_compare_times_a_given_a_a_control_as_its_own_arm() -> None:
    """aa_control may be a callable: that arm is the control; the baseline runs once a round."""
    calls: list[str] = []

    def arm(name: str) -> Callable[[], None]:
        def fn() -> None:
            calls.append(name)
            time.sleep(0.0003)  # one call per sample

        return fn

    result = compare(
        {"a": arm("a"), "b": arm("b")},
        baseline="a",
        device=CPU,
        aa_control=arm("a2"),
        warmup=1,
        min_rounds=4,
        budget_s=0,
    )
    assert set(result.measurements) == {"a", "b", aa_name("a")}
    assert result.aa_control is not None
    assert calls.count("a") == calls.count("a2") == calls.count("b") == 1 + result.rounds


def test_compare_reports_progress() -> None:
    """The progress callback sees every round."""
    seen: list[int] = []
    compare(
        {"x": lambda: time.sleep(0.0003)},
        baseline="x",
        device=CPU,
        warmup=1,
        budget_s=0.0,
        min_rounds=3,
        progress=lambda done, total, description: seen.append(done),
    )
    assert seen == [1, 2, 3]


@pytest.mark.cuda
def test_measure_on_cuda_uses_events() -> None:
    """On a GPU the engine times with CUDA events and records the GPU's name."""
    device = torch.device("cuda")
    a = torch.randn(256, 256, device=device)
    context = TimingContext.capture(device, torch.float32)
    m = measure(lambda: a @ a, device=device, budget_s=0.2, min_samples=5, context=context)
    assert m.median_ms > 0
    assert m.n_samples >= 5
    assert m.context is not None
    assert m.context.device_name == torch.cuda.get_device_name(device)
    # The timer is the CUDA-event one, and it sees GPU work: a product 8x larger (in n) takes longer.
    from toolkit.timing import engine

    assert engine._Timer(device).cuda
    big = torch.randn(2048, 2048, device=device)
    m_big = measure(lambda: big @ big, device=device, budget_s=0.2, min_samples=5)
    assert m_big.median_ms > m.median_ms


def _failing_after(calls: int) -> Callable[[], object]:
    """A callable whose allocation fails (torch.OutOfMemoryError) from its ``calls``-th call on."""
    done = [0]

    def run() -> object:
        done[0] += 1
        if done[0] >= calls:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return time.sleep(0.0003)

    return run


def test_compare_stops_on_out_of_memory_keeping_the_complete_rounds() -> None:
    """An arm that runs out of memory mid-run ends the comparison with the rounds completed before it;
    every arm keeps the same number of samples; too early, it is one clear error."""
    from toolkit.errors import InsufficientMemoryError

    result = compare(
        {"a": lambda: time.sleep(0.0003), "b": _failing_after(40)},
        baseline="a",
        device=torch.device("cpu"),
        warmup=1,
        budget_s=30.0,
        target_rel_ci=1e-9,  # never converges: the run goes on until the allocation fails
        aa_control=False,
    )
    assert result.stop_reason == "out_of_memory"
    counts = {name: m.n_samples for name, m in result.measurements.items()}
    assert len(set(counts.values())) == 1
    assert counts["a"] >= 2
    with pytest.raises(InsufficientMemoryError, match="before two rounds were complete"):
        compare(
            {"a": lambda: None, "b": _failing_after(3)}, baseline="a", device=torch.device("cpu"), warmup=1
        )
    with pytest.raises(ValueError, match="not memory"):  # other errors pass through unchanged
        compare(
            {"a": lambda: None, "b": _raises(ValueError("not memory"))},
            baseline="a",
            device=torch.device("cpu"),
        )


def _raises(exc: Exception) -> Callable[[], object]:
    def run() -> object:
        raise exc

    return run
