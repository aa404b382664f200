"""How does a matrix product split across processes, and what does the split cost?

One study: C = A @ B computed by a block plan (:mod:`toolkit.matmul.plans`) on worker processes
that share A, B and C (the process pool), or on torch.distributed ranks; timed against NumPy's own
multi-threaded matmul and against the same kernel in one process, one thread; and verified on every
run against a plain non-parallel product.

Timing: the parallel product is timed in the parent from the first task sent to the last result
back (dispatch included); the NumPy and single-process references are timed inside a worker around
the product alone. The three are interleaved round by round in a rotating order, so drift of a busy
machine hits each alike. Medians and IQRs are over ``repeat`` rounds after one untimed warm-up.
Starting the workers and copying the inputs into shared memory are reported apart.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from toolkit.errors import InputError, setting
from toolkit.files import check_input_file
from toolkit.matmul import worker
from toolkit.matmul.distributed import LocalGroup, backend_for, check_device, in_torchrun, torchrun_rank
from toolkit.matmul.kernels import NAIVE_REFERENCE_MAX_MULTIPLY_ADDS
from toolkit.matmul.plans import SPLITS, make_plan
from toolkit.matmul.pool import START_METHOD, MatmulPool, available_cores, blas_threads_per_worker
from toolkit.matmul.shared import Workspace
from toolkit.matmul.torchrun import TorchrunLeader
from toolkit.matmul.verify import (
    Verification,
    check_representable,
    compare_exact,
    compare_to_bound,
    freivalds,
)
from toolkit.progress import ProgressCallback, no_progress
from toolkit.timing.stats import Measurement

DTYPES = ("float64", "float32", "int64")
KERNEL_NAMES = ("blas", "naive")
BACKENDS = ("pool", "torch-distributed")
Backend = Literal["pool", "torch-distributed"]
INT_RANGE = 1000  # random int64 inputs are drawn from [-1000, 1000)


# --------------------------------------------------------------------------------------------------
# Inputs


def make_inputs(n: int, k: int, m: int, dtype: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random A [n, k] and B [k, m]: standard normal floats, or integers in [-1000, 1000)."""
    if min(n, k, m) < 1:
        raise InputError(f"matrix sizes must be at least 1, got n={n}, k={k}, m={m}")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    rng = np.random.default_rng(seed)
    if dtype == "int64":
        return (
            rng.integers(-INT_RANGE, INT_RANGE, size=(n, k), dtype=np.int64),
            rng.integers(-INT_RANGE, INT_RANGE, size=(k, m), dtype=np.int64),
        )
    return (
        rng.standard_normal((n, k), dtype=np.float64).astype(dtype, copy=False),
        rng.standard_normal((k, m), dtype=np.float64).astype(dtype, copy=False),
    )


def load_inputs(path_a: Path, path_b: Path, dtype: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A and B from ``.npy`` files (memory-mapped: read once, into shared memory), checked for use.

    ``dtype`` converts both (float to float, or int to float); without it they keep their own dtype.
    """
    arrays = []
    for name, path in (("A", path_a), ("B", path_b)):
        check_input_file(path, f"{name} file", "pass an existing .npy file", InputError)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(
                f"cannot read {name} from {path} as a .npy array ({exc}); save it with numpy.save"
            ) from None
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            shape = getattr(array, "shape", "?")
            raise InputError(f"{name} in {path} must be a 2-D matrix, got shape {shape}")
        if min(array.shape) < 1:
            raise InputError(f"{name} in {path} is empty (shape {array.shape}); every dimension must be >= 1")
        arrays.append(array)
    a, b = arrays
    if a.shape[1] != b.shape[0]:
        raise InputError(
            f"A is {a.shape[0]}×{a.shape[1]} but B is {b.shape[0]}×{b.shape[1]}: "
            f"A's columns ({a.shape[1]}) must equal B's rows ({b.shape[0]})"
        )
    if dtype is not None:
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        target = np.dtype(dtype)
        for name, x in (("A", a), ("B", b)):
            if not np.can_cast(x.dtype, target, casting="same_kind"):
                raise InputError(
                    f"{name} is {x.dtype} and cannot be converted to {dtype} without losing values"
                )
        return a.astype(target), b.astype(target)
    if a.dtype != b.dtype or a.dtype.name not in DTYPES:
        raise InputError(
            f"A is {a.dtype} and B is {b.dtype}: both must be one of {', '.join(DTYPES)} "
            f"(or pass {setting('dtype')} to convert them)"
        )
    return a, b


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class MatmulRun:
    """One worker count: its start-up, the three interleaved timings, and the verification."""

    workers: int
    blas_threads: int  # per worker (torch threads per rank on torch-distributed)
    cores: int
    plan: str
    start_ms: float  # starting the workers (pool) or the ranks and the process group
    scatter_ms: float | None  # torch-distributed: rank 0 sending every rank its blocks
    parallel: Measurement
    numpy: Measurement
    serial: Measurement
    verification: Verification
    multiply_adds: int

    @property
    def gflops(self) -> float:
        """Achieved rate of the parallel product: 2·N·K·M operations over its median time."""
        return 2.0 * self.multiply_adds / (self.parallel.median_ms * 1e-3) / 1e9

    @property
    def speedup_vs_numpy(self) -> float:
        return self.numpy.median_ms / self.parallel.median_ms

    @property
    def speedup_vs_serial(self) -> float:
        return self.serial.median_ms / self.parallel.median_ms

    @property
    def efficiency(self) -> float:
        """Speed-up over one process divided by the cores it could use: min(workers, cores)."""
        return self.speedup_vs_serial / min(self.workers, self.cores)

    def to_dict(self) -> dict[str, Any]:
        check = self.verification
        return {
            "workers": self.workers,
            "blas_threads_per_worker": self.blas_threads,
            "plan": self.plan,
            "correct": check.correct,
            "max_abs_err": check.max_abs_err,
            "bound": check.bound,
            "parallel_ms": self.parallel.median_ms,
            "numpy_ms": self.numpy.median_ms,
            "serial_ms": self.serial.median_ms,
            "gflops": self.gflops,
            "speedup_vs_numpy": self.speedup_vs_numpy,
            "speedup_vs_serial": self.speedup_vs_serial,
            "efficiency": self.efficiency,
            "start_ms": self.start_ms,
            "scatter_ms": self.scatter_ms,
            "timings": {
                "parallel": self.parallel.to_dict(),
                "numpy": self.numpy.to_dict(),
                "serial": self.serial.to_dict(),
            },
            "verification": check.to_dict(),
        }


@dataclass(frozen=True)
class MatmulResult:
    """A study: the inputs, how they were shared, and one :class:`MatmulRun` per worker count."""

    n: int
    k: int
    m: int
    dtype: str
    split: str
    kernel: str
    backend: str
    backend_detail: str  # how the processes were made and talk: pool, local ranks, or torchrun
    inputs: str  # "random, seed 0" or the two file names
    cores: int
    start_method: str
    copy_ms: float  # copying A and B into shared memory
    repeat: int
    runs: tuple[MatmulRun, ...] = field(default_factory=tuple)

    @property
    def correct(self) -> bool:
        return all(run.verification.correct for run in self.runs)

    @property
    def best(self) -> MatmulRun:
        """The fastest run (the only one without a sweep)."""
        return min(self.runs, key=lambda run: run.parallel.median_ms)

    def to_dict(self) -> dict[str, Any]:
        """The flat summary fields describe :attr:`best`; ``runs`` holds every worker count."""
        best = self.best.to_dict()
        summary = {key: best[key] for key in ("workers", "parallel_ms", "numpy_ms", "serial_ms", "gflops")}
        summary.update({key: best[key] for key in ("speedup_vs_numpy", "speedup_vs_serial", "efficiency")})
        return {
            "correct": self.correct,
            "max_abs_err": max(run.verification.max_abs_err for run in self.runs),
            "bound": max(run.verification.bound for run in self.runs),
            **summary,
            "split": self.split,
            "kernel": self.kernel,
            "backend": self.backend,
            "backend_detail": self.backend_detail,
            "n": self.n,
            "k": self.k,
            "m": self.m,
            "dtype": self.dtype,
            "inputs": self.inputs,
            "cores": self.cores,
            "start_method": self.start_method,
            "copy_ms": self.copy_ms,
            "repeat": self.repeat,
            "reference": self.runs[0].verification.reference,
            "runs": [run.to_dict() for run in self.runs],
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per worker count."""
        rows = []
        for run in self.runs:
            row = {
                key: value for key, value in run.to_dict().items() if key not in ("timings", "verification")
            }
            row.update(
                parallel_iqr_ms=run.parallel.iqr_ms,
                numpy_iqr_ms=run.numpy.iqr_ms,
                serial_iqr_ms=run.serial.iqr_ms,
                worst_ratio=run.verification.worst_ratio,
                split=self.split,
                kernel=self.kernel,
                backend=self.backend,
            )
            rows.append(row)
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# The study


@dataclass(frozen=True)
class MatmulSettings:
    """How to run the product (the inputs come separately)."""

    split: str = "k"
    kernel: str = "blas"
    workers: tuple[int, ...] = (2,)  # one run per entry (a sweep when several)
    repeat: int = 5
    backend: Backend = "pool"
    device: str = "cpu"  # torch-distributed only: "cuda" runs NCCL on GPUs
    check_freivalds: bool = False
    inputs: str = "random"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}; valid: {', '.join(SPLITS)}")
        if self.kernel not in KERNEL_NAMES:
            raise InputError(f"unknown kernel {self.kernel!r}; valid: {', '.join(KERNEL_NAMES)}")
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if not self.workers or min(self.workers) < 1:
            raise InputError(f"{setting('workers')} must be at least 1, got {list(self.workers)}")
        if self.repeat < 1:
            raise InputError(f"{setting('repeat')} must be at least 1, got {self.repeat}")
        if self.backend == "pool" and self.device == "cuda":
            raise InputError(
                f"the process pool runs on the CPU; use {setting('backend')} torch-distributed for "
                f"{setting('device')} cuda"
            )


def describe_backend(settings: MatmulSettings) -> str:
    if settings.backend == "pool":
        return f"ProcessPoolExecutor ({START_METHOD}), A, B, C in shared memory"
    where = (
        "ranks of this torchrun job" if in_torchrun() else f"local ranks from {START_METHOD}, file rendezvous"
    )
    return f"torch.distributed, {backend_for(settings.device)}, {where}"


def reference_kernel(settings: MatmulSettings, multiply_adds: int) -> str:
    """The naive triple loop when affordable (or when it is the kernel anyway), NumPy otherwise."""
    if settings.kernel == "naive" or multiply_adds <= NAIVE_REFERENCE_MAX_MULTIPLY_ADDS:
        return "naive"
    return "blas"


REFERENCE_NAMES = {"naive": "the naive triple loop", "blas": "NumPy's matmul (1 thread)"}


def run_matmul(
    a: np.ndarray, b: np.ndarray, settings: MatmulSettings, progress: ProgressCallback | None = None
) -> MatmulResult:
    """Multiply ``a @ b`` in parallel for each worker count in ``settings``; time and verify each."""
    report = progress or no_progress
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise InputError(f"A {a.shape} and B {b.shape} cannot be multiplied: A's columns must equal B's rows")
    if a.dtype != b.dtype or a.dtype.name not in DTYPES:
        raise InputError(f"A and B must share one dtype of {', '.join(DTYPES)}, got {a.dtype} and {b.dtype}")
    check_representable(a, b)
    n, k = a.shape
    m = b.shape[1]
    cores = available_cores()
    if settings.backend == "torch-distributed":
        torchrun = in_torchrun()
        if torchrun:
            _, world, _ = torchrun_rank()
            if settings.workers != (world,):
                raise InputError(
                    f"under torchrun the ranks are torchrun's ({world}); drop {setting('workers')} "
                    "or make them equal to torchrun's world size"
                )
        for workers in settings.workers:
            check_device(settings.device, workers, settings.kernel, a.dtype.name, local=not torchrun)
    steps_per_run = settings.repeat + 3
    total_steps = 1 + steps_per_run * len(settings.workers)
    report(0, total_steps, "copying A and B into shared memory")
    with Workspace(n, k, m, a.dtype) as workspace:
        begin = time.perf_counter()
        workspace.load(a, b)
        copy_ms = (time.perf_counter() - begin) * 1e3
        runs = []
        for index, workers in enumerate(settings.workers):
            done = 1 + index * steps_per_run

            def step(offset: int, description: str, done: int = done, workers: int = workers) -> None:
                report(done + offset, total_steps, f"{workers} workers: {description}")

            runs.append(_run_point(workspace, settings, workers, cores, first=index == 0, step=step))
        report(total_steps, total_steps, "done")
    return MatmulResult(
        n=n,
        k=k,
        m=m,
        dtype=a.dtype.name,
        split=settings.split,
        kernel=settings.kernel,
        backend=settings.backend,
        backend_detail=describe_backend(settings),
        inputs=settings.inputs,
        cores=cores,
        start_method=START_METHOD,
        copy_ms=copy_ms,
        repeat=settings.repeat,
        runs=tuple(runs),
    )


def _run_point(
    workspace: Workspace,
    settings: MatmulSettings,
    workers: int,
    cores: int,
    first: bool,
    step: Callable[[int, str], None],
) -> MatmulRun:
    """Start ``workers`` processes (pool workers or ranks), time the three arms interleaved, verify."""
    n, k, m = workspace.n, workspace.k, workspace.m
    distributed = settings.backend == "torch-distributed"
    plan = make_plan(settings.split, n, k, m, workers)
    if not distributed:
        workspace.use_plan(plan)
    specs = workspace.specs()
    threads = blas_threads_per_worker(workers, cores)
    ref_kernel = reference_kernel(settings, n * k * m)
    what = (
        f"{workers} torch.distributed ranks ({backend_for(settings.device)})"
        if distributed
        else f"{workers} worker processes"
    )
    step(0, f"starting {what} ({START_METHOD})")
    with contextlib.ExitStack() as stack:
        # On torch.distributed, one pool worker computes the references while the ranks wait.
        pool = stack.enter_context(MatmulPool(1, cores) if distributed else MatmulPool(workers, threads))
        start_s, scatter_s = pool.start(), None
        parallel: Callable[[], float] = lambda: pool.run_plan(specs, plan, settings.kernel)  # noqa: E731
        if distributed:
            leader = _leader(workspace, settings, workers, threads)
            stack.enter_context(leader)
            start_s, scatter_s = leader.start()
            parallel = leader.run_once
        step(1, "warm-up and references")
        if first and workspace.dtype.kind == "f":
            pool.call(worker.absolute_product, specs, cores)
        # The serial arm doubles as the reference when it runs the reference's kernel.
        serial_into = "reference" if ref_kernel == settings.kernel else "scratch"
        if first and serial_into == "scratch":
            pool.call(worker.plain_product, specs, ref_kernel, 1, "reference")
        arms: dict[str, Callable[[], float]] = {
            "parallel": parallel,
            "numpy": lambda: pool.call(worker.plain_product, specs, "blas", cores, "scratch"),
            "serial": lambda: pool.call(worker.plain_product, specs, settings.kernel, 1, serial_into),
        }
        warm_up = ["parallel", "numpy"] + (["serial"] if settings.kernel == "blas" else [])
        samples = _interleave(
            arms, settings.repeat, warm_up, lambda r: step(2 + r, f"round {r + 1}/{settings.repeat}")
        )
    step(2 + settings.repeat, "verifying")
    verification = _verify(workspace, settings, k, REFERENCE_NAMES[ref_kernel])
    return MatmulRun(
        workers=workers,
        blas_threads=threads,
        cores=cores,
        plan=plan.describe(),
        start_ms=start_s * 1e3,
        scatter_ms=None if scatter_s is None else scatter_s * 1e3,
        parallel=Measurement(tuple(samples["parallel"])),
        numpy=Measurement(tuple(samples["numpy"])),
        serial=Measurement(tuple(samples["serial"])),
        verification=verification,
        multiply_adds=n * k * m,
    )


def _leader(
    workspace: Workspace, settings: MatmulSettings, workers: int, threads: int
) -> LocalGroup | TorchrunLeader:
    """Local ranks started here, or, under torchrun, this process as rank 0."""
    if in_torchrun():
        return TorchrunLeader(
            workspace["a"], workspace["b"], workspace["c"], settings.split, settings.kernel, settings.device
        )
    specs = workspace.specs()
    return LocalGroup(
        workers, (specs.a, specs.b, specs.c), settings.split, settings.kernel, settings.device, threads
    )


def _interleave(
    arms: dict[str, Callable[[], float]],
    repeat: int,
    warm_up: Sequence[str],
    on_round: Callable[[int], None],
) -> dict[str, list[float]]:
    """Untimed warm-up calls, then ``repeat`` rounds of every arm in a rotating order (ms)."""
    for name in warm_up:
        arms[name]()
    names = list(arms)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        on_round(r)
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(arms[name]() * 1e3)
    return samples


def _verify(workspace: Workspace, settings: MatmulSettings, k: int, reference_name: str) -> Verification:
    c, reference = workspace["c"], workspace["reference"]
    if workspace.dtype.kind in "iu":
        verification = compare_exact(c, reference, reference_name)
    else:
        verification = compare_to_bound(c, reference, workspace["absolute"], k, reference_name)
    if settings.check_freivalds:
        check = freivalds(workspace["a"], workspace["b"], c)
        verification = replace(verification, freivalds=check, correct=verification.correct and check.passed)
    return verification
