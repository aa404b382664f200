"""The parallel matrix product: plans, kernels, verification, the pool and the torch.distributed backend.

References are independent of the code under test: integer products are compared for bit-identity
(any summation order gives the same integers), floats against ``math.fsum`` (an exactly rounded sum)
and against NumPy within the rounding bound.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import dims, splits, worker_counts

from toolkit.errors import InputError, WorkerDiedError
from toolkit.matmul.kernels import blas_kernel, naive_kernel, naive_matmul
from toolkit.matmul.plans import SPLITS, Span, execute_plan, grid_shape, make_plan, split_evenly
from toolkit.matmul.pool import MatmulPool
from toolkit.matmul.shared import SharedArray, Workspace, segment_prefix
from toolkit.matmul.verify import check_representable, compare_exact, compare_to_bound, freivalds, gamma
from toolkit.studies.matmul import MatmulSettings, make_inputs, run_matmul

# Shapes that include 1×1, primes, and more workers than any dimension.


def int_inputs(n: int, k: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-50, 50, size=(n, k)), rng.integers(-50, 50, size=(k, m))


def exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A @ B in Python integers (object arrays): no overflow, no NumPy integer kernel."""
    product: np.ndarray = (a.astype(object) @ b.astype(object)).astype(np.int64)
    return product


# --------------------------------------------------------------------------------------------------
# Plans


@given(length=st.integers(0, 50), parts=st.integers(1, 12))
def test_split_evenly_partitions(length: int, parts: int) -> None:
    """Spans are contiguous, non-empty, cover [0, length), and differ in size by at most one."""
    spans = split_evenly(length, parts)
    assert [s.start for s in spans[1:]] == [s.stop for s in spans[:-1]]
    assert sum(s.size for s in spans) == length
    assert all(s.size > 0 for s in spans)
    assert len(spans) == min(length, parts)
    if spans:
        assert max(s.size for s in spans) - min(s.size for s in spans) <= 1


@given(n=dims, k=dims, m=dims, workers=worker_counts, split=splits)
@settings(max_examples=150, deadline=None)
def test_plan_covers_every_product_term_once(n: int, k: int, m: int, workers: int, split: str) -> None:
    """Every term A[i,p]·B[p,j] is in exactly one task, and every C[i,j] has exactly one slot-0 writer."""
    plan = make_plan(split, n, k, m, workers)
    terms = np.zeros((n, k, m), dtype=np.int64)
    direct = np.zeros((n, m), dtype=np.int64)
    slots: dict[tuple[int, int], list[int]] = {}
    for task in plan.products:
        terms[task.rows.slice, task.inner.slice, task.cols.slice] += 1
        if task.slot == 0:
            direct[task.rows.slice, task.cols.slice] += 1
        for i in range(task.rows.start, task.rows.stop):
            for j in range(task.cols.start, task.cols.stop):
                slots.setdefault((i, j), []).append(task.slot)
    assert all(len(set(used)) == len(used) for used in slots.values()), "two writers share a slot"
    assert (terms == 1).all()
    assert (direct == 1).all()
    assert all(0 <= task.slot <= plan.n_partials for task in plan.products)
    if split in ("rows", "cols", "grid"):
        assert plan.n_partials == 0
        assert len(plan.products) <= workers
    if plan.n_partials:
        assert sum(s.size for s in plan.reduce_stripes) == n


@given(n=dims, k=dims, m=dims, workers=worker_counts, split=splits, seed=st.integers(0, 2**16))
@settings(max_examples=100, deadline=None)
def test_executed_plan_is_bit_identical_for_integers(
    n: int, k: int, m: int, workers: int, split: str, seed: int
) -> None:
    """Run in this process, every plan reproduces the exact integer product (BLAS and naive kernels)."""
    a, b = int_inputs(n, k, m, seed)
    expected = exact_product(a, b)
    plan = make_plan(split, n, k, m, workers)
    np.testing.assert_array_equal(execute_plan(plan, a, b, blas_kernel), expected)
    np.testing.assert_array_equal(execute_plan(plan, a, b, naive_kernel), expected)


def test_grid_shape_is_as_square_as_the_matrix() -> None:
    """A tall C gets more row blocks; a prime worker count falls back to a single row or column."""
    assert grid_shape(100, 100, 4) == (2, 2)
    assert grid_shape(400, 100, 4) == (4, 1)
    assert grid_shape(200, 400, 8) == (2, 4)
    assert grid_shape(100, 100, 7) in ((1, 7), (7, 1))


def test_recursive_plan_flattens_to_leaves() -> None:
    """The recursive split yields about two leaves per worker, and a tall-K product gets K partials."""
    plan = make_plan("recursive", 64, 64, 64, 4)
    assert len(plan.products) == 8
    tall = make_plan("recursive", 2, 1000, 2, 4)
    assert tall.n_partials >= 1
    assert all(task.rows == Span(0, 2) and task.cols == Span(0, 2) for task in tall.products)


def test_make_plan_rejects_nonsense() -> None:
    """Unknown splits and empty shapes are programming errors."""
    with pytest.raises(ValueError, match="unknown split"):
        make_plan("diagonal", 2, 2, 2, 2)
    with pytest.raises(ValueError, match=">= 1"):
        make_plan("k", 0, 2, 2, 2)


# --------------------------------------------------------------------------------------------------
# The naive kernel


@given(n=dims, k=dims, m=dims, seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_naive_float_matches_exactly_rounded_sums(n: int, k: int, m: int, seed: int) -> None:
    """Each naive C[i,j] is within γ_K·Σ|a·b| of fsum, the exactly rounded sum of the products."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, k)), rng.standard_normal((k, m))
    c = naive_matmul(a, b)
    for i in range(n):
        for j in range(m):
            terms = [float(a[i, p]) * float(b[p, j]) for p in range(k)]
            exact = math.fsum(terms)
            bound = gamma(k, 2.0**-53) * math.fsum(abs(t) for t in terms) + 1e-300
            assert abs(c[i, j] - exact) <= bound


def test_naive_integers_and_float32() -> None:
    """Integers are exact even near 2^62; float32 inputs give float32 results."""
    a = np.array([[2**61, 1], [-(2**61), 3]], dtype=np.int64)
    b = np.array([[1, 0], [5, 1]], dtype=np.int64)
    np.testing.assert_array_equal(naive_matmul(a, b), exact_product(a, b))
    a32 = np.ones((3, 4), dtype=np.float32)
    assert naive_matmul(a32, a32.T).dtype == np.float32
    with pytest.raises(ValueError, match="cannot be multiplied"):
        naive_matmul(a32, a32)


# --------------------------------------------------------------------------------------------------
# Verification


def test_overflow_refused_and_safe_values_accepted() -> None:
    """int64 products that could exceed 2^63-1 are refused (NumPy would wrap); safe ones pass."""
    big = np.full((2, 4), 2**31, dtype=np.int64)
    with pytest.raises(InputError, match="could overflow"):
        check_representable(big, big.T.copy())  # Σ 4·2^62 = 2^64
    check_representable(big[:, :1], big[:, :1].T.copy())  # 2^62 fits
    # The cheap bound |A|·rowmax|B| is 2^63 here, but every Σ_k |A_ik·B_kj| is 2^62 + 2^40:
    # the exact check accepts it.
    a = np.array([[2**40, 2**40]], dtype=np.int64)
    b = np.array([[2**22, 1], [1, 2**22]], dtype=np.int64)
    check_representable(a, b)
    with pytest.raises(InputError, match="NaN or infinity"):
        check_representable(np.array([[np.nan]]), np.array([[1.0]]))
    with pytest.raises(InputError, match="could overflow"):
        check_representable(np.full((1, 2), 1e300), np.full((2, 1), 1e300))


def test_compare_detects_wrong_elements() -> None:
    """One wrong integer breaks bit-identity; a float error well above the bound is flagged."""
    a, b = int_inputs(5, 7, 3, 0)
    c = exact_product(a, b)
    assert compare_exact(c, c.copy(), "ref").correct
    wrong = c.copy()
    wrong[2, 1] += 1
    check = compare_exact(wrong, c, "ref")
    assert not check.correct
    assert check.mismatches == 1
    assert check.max_abs_err == 1.0
    rng = np.random.default_rng(1)
    af, bf = rng.standard_normal((6, 50)), rng.standard_normal((50, 4))
    absolute = np.abs(af) @ np.abs(bf)
    cf = af @ bf
    reference = naive_matmul(af, bf)
    good = compare_to_bound(cf, reference, absolute, 50, "ref")
    assert good.correct
    assert good.worst_ratio <= 1.0
    bad = cf.copy()
    bad[0, 0] += 1e-9
    assert not compare_to_bound(bad, reference, absolute, 50, "ref").correct


def test_freivalds() -> None:
    """Freivalds passes a right product and catches one wrong element, integers and floats."""
    a, b = int_inputs(30, 20, 25, 3)
    c = exact_product(a, b)
    assert freivalds(a, b, c).passed
    c[17, 3] -= 1
    assert not freivalds(a, b, c).passed
    rng = np.random.default_rng(2)
    af, bf = rng.standard_normal((40, 30)), rng.standard_normal((30, 20))
    cf = af @ bf
    assert freivalds(af, bf, cf).passed
    cf32 = (af.astype(np.float32) @ bf.astype(np.float32)).astype(np.float32)
    assert freivalds(af.astype(np.float32), bf.astype(np.float32), cf32).passed
    cf[5, 5] += 1e-6
    assert not freivalds(af, bf, cf).passed


# --------------------------------------------------------------------------------------------------
# Shared memory and the pool


def _leftover_segments() -> list[str]:
    import os

    try:
        return [name for name in os.listdir("/dev/shm") if name.startswith(segment_prefix(os.getpid()))]
    except FileNotFoundError:
        return []


def test_shared_array_is_shared_and_unlinked() -> None:
    """A second mapping by name sees the data; release unlinks the name at once, twice is harmless."""
    from toolkit.matmul.shared import attach, keep_only

    shared = SharedArray("test", (3, 3), np.dtype(np.float64))
    shared.array[...] = 7.0
    assert attach(shared.spec).sum() == 63.0
    keep_only(set())
    assert len(_leftover_segments()) == 1
    shared.release()
    shared.release()
    assert _leftover_segments() == []


def test_attached_array_is_mapped_before_the_first_write() -> None:
    """A worker's first write to a newly attached array takes no page faults: attach mapped it.

    Without that, 16 MiB of 4 KiB pages would cost 4096 faults inside the first timed task.
    """
    import resource

    from toolkit.matmul.shared import attach, keep_only

    shared = SharedArray("faults", (2048, 1024), np.dtype(np.float64))
    try:
        shared.array.fill(1.0)  # the pages exist, as after another worker wrote them
        mapped = attach(shared.spec)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        mapped.fill(2.0)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        assert faults < 40, f"{faults} page faults writing 4096 pages through a fresh attachment"
        assert shared.array.sum() == 2.0 * mapped.size
    finally:
        keep_only(set())
        shared.release()


@pytest.fixture(scope="module")
def pool() -> Iterator[MatmulPool]:
    """One process pool shared by the pool tests of this module."""
    with MatmulPool(3, 1) as started:
        started.start()
        yield started


@given(n=dims, k=dims, m=dims, workers=worker_counts, split=splits, seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pool_runs_every_plan_bit_identically(
    pool: MatmulPool, n: int, k: int, m: int, workers: int, split: str, seed: int
) -> None:
    """On worker processes sharing memory, every split and worker count gives the exact integer product."""
    a, b = int_inputs(n, k, m, seed)
    plan = make_plan(split, n, k, m, workers)
    with Workspace(n, k, m, np.dtype(np.int64)) as workspace:
        workspace.load(a, b)
        workspace.use_plan(plan)
        pool.run_plan(workspace.specs(), plan, "naive" if seed % 2 else "blas")
        np.testing.assert_array_equal(workspace["c"], exact_product(a, b))
    assert _leftover_segments() == []


def test_pool_reports_a_dead_worker(pool: MatmulPool) -> None:
    """A worker killed mid-task fails the call at once with WorkerDiedError naming the signal."""
    with MatmulPool(2, 1) as doomed:
        doomed.start()
        with pytest.raises(WorkerDiedError, match="SIGKILL"):
            doomed.call(signal.raise_signal, signal.SIGKILL)


@pytest.mark.parametrize(
    ("dtype", "kernel", "split", "workers"),
    [
        ("int64", "blas", "k", (1, 5)),
        ("float64", "blas", "grid", (3,)),
        ("float32", "naive", "recursive", (2,)),
        ("int64", "naive", "cols", (7,)),
    ],
)
def test_run_matmul_verifies_and_times(dtype: str, kernel: str, split: str, workers: tuple[int, ...]) -> None:
    """The study: verified against the plain product, timed, more workers than cores and than columns."""
    a, b = make_inputs(11, 13, 5, dtype, seed=4)
    result = run_matmul(
        a, b, MatmulSettings(split=split, kernel=kernel, workers=workers, repeat=2, check_freivalds=True)
    )
    assert result.correct
    assert [run.workers for run in result.runs] == list(workers)
    for run in result.runs:
        assert run.verification.reference == "the naive triple loop"
        assert run.verification.exact == (dtype == "int64")
        assert run.verification.freivalds is not None
        assert run.verification.freivalds.passed
        assert len(run.parallel.samples_ms) == 2
        assert run.parallel.median_ms > 0
        assert run.gflops > 0
    summary = result.to_dict()
    for key in ("correct", "max_abs_err", "bound", "parallel_ms", "numpy_ms", "gflops", "speedup_vs_numpy"):
        assert key in summary
    assert summary["split"] == split
    assert len(result.to_frame()) == len(workers)
    assert _leftover_segments() == []


def test_run_matmul_refuses_overflow_before_starting() -> None:
    """Overflowing int64 inputs are refused with the reason."""
    a = np.full((2, 8), 2**31, dtype=np.int64)
    with pytest.raises(InputError, match="int64 product could overflow"):
        run_matmul(a, a.T.copy(), MatmulSettings(workers=(2,), repeat=1))


def test_settings_are_validated() -> None:
    """Impossible settings are InputErrors with the valid choices."""
    with pytest.raises(InputError, match="at least 1"):
        MatmulSettings(workers=(0,))
    with pytest.raises(InputError, match="valid"):
        MatmulSettings(split="diagonal")
    with pytest.raises(InputError, match="torch-distributed"):
        MatmulSettings(device="cuda")


# --------------------------------------------------------------------------------------------------
# torch.distributed (gloo, two local ranks)


@pytest.mark.parametrize("split", SPLITS)
def test_torch_distributed_two_gloo_ranks(split: str) -> None:
    """Two local gloo ranks: blocks sent from rank 0, all_reduce / all_gather, exact integer C."""
    a, b = make_inputs(9, 7, 5, "int64", seed=5)
    result = run_matmul(
        a, b, MatmulSettings(split=split, workers=(2,), repeat=2, backend="torch-distributed")
    )
    assert result.correct
    run = result.runs[0]
    assert run.verification.exact
    assert run.scatter_ms is not None
    assert run.scatter_ms >= 0
    assert _leftover_segments() == []
