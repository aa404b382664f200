"""``toolkit matmul``: a block-parallel matrix product, verified, timed against NumPy, safe to interrupt."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from toolkit.cli import options as opt
from toolkit.cli.app import app
from toolkit.cli.output import Output
from toolkit.errors import InputError
from toolkit.files import PLOT_SUFFIXES, check_output_file
from toolkit.plots import MATMUL_PLOT

if TYPE_CHECKING:
    import numpy as np

SIZE = "Inputs (random unless --a/--b)"
RUN = "How to split and run"
DEFAULT_SIZE = {"blas": 1024, "naive": 128}
MAX_WORKERS = 256

Size = Annotated[
    int | None,
    typer.Option(
        "--size", min=1, help="N = K = M (default 1024; 128 with --kernel naive).", rich_help_panel=SIZE
    ),
]
Rows = Annotated[
    int | None, typer.Option("--n", min=1, help="Rows of A and C (default --size).", rich_help_panel=SIZE)
]
Inner = Annotated[
    int | None,
    typer.Option("--k", min=1, help="Columns of A, rows of B (default --size).", rich_help_panel=SIZE),
]
Cols = Annotated[
    int | None, typer.Option("--m", min=1, help="Columns of B and C (default --size).", rich_help_panel=SIZE)
]
MatmulDtype = Annotated[
    Literal["float64", "float32", "int64"] | None,
    typer.Option(
        "--dtype",
        help="Element type (default float64); with --a/--b, converts the files' arrays.",
        rich_help_panel=SIZE,
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the random inputs.", rich_help_panel=SIZE)]
FileA = Annotated[
    Path | None, typer.Option("--a", help="A from a .npy file (with --b).", rich_help_panel=SIZE)
]
FileB = Annotated[
    Path | None, typer.Option("--b", help="B from a .npy file (with --a).", rich_help_panel=SIZE)
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=MAX_WORKERS,
        help="Worker processes or ranks (default: the number of cores); more than the cores works.",
        rich_help_panel=RUN,
    ),
]
SweepWorkers = Annotated[
    str | None,
    typer.Option(
        "--sweep-workers",
        help="Comma-separated worker counts, e.g. 1,2,4,8: one run each, and the scaling plot.",
        rich_help_panel=RUN,
    ),
]
Split = Annotated[
    Literal["k", "rows", "cols", "grid", "recursive"],
    typer.Option(
        "--split",
        help="k: worker i holds A[:, K_i] and B[K_i, :], partials summed; rows/cols/grid: blocks of C; "
        "recursive: divide and conquer flattened onto the one pool.",
        rich_help_panel=RUN,
    ),
]
Kernel = Annotated[
    Literal["blas", "naive"],
    typer.Option(
        "--kernel",
        help="blas: NumPy per block, cores÷workers BLAS threads each; naive: the pure-Python triple loop.",
        rich_help_panel=RUN,
    ),
]
Repeat = Annotated[
    int, typer.Option("--repeat", min=1, help="Timed rounds (the median is reported).", rich_help_panel=RUN)
]
Check = Annotated[
    Literal["reference", "freivalds"],
    typer.Option(
        "--check",
        help="reference: against a plain product (always done); freivalds: add Freivalds' randomized check.",
        rich_help_panel=RUN,
    ),
]
BackendOption = Annotated[
    Literal["pool", "torch-distributed"],
    typer.Option(
        "--backend",
        help="pool: processes sharing memory; torch-distributed: ranks exchanging blocks (gloo/NCCL), "
        "local or under torchrun.",
        rich_help_panel=RUN,
    ),
]
MatmulDevice = Annotated[
    opt.DeviceName,
    typer.Option(
        "--device",
        help="The pool always runs on the CPU. torch-distributed: cpu = gloo ranks, cuda = NCCL ranks, "
        "auto = cuda when a GPU is visible.",
        rich_help_panel=RUN,
    ),
]
PlotPath = Annotated[
    Path, typer.Option("--plot", help="Where --sweep-workers saves the scaling plot.", rich_help_panel=RUN)
]


def _worker_counts(workers: int | None, sweep: str | None) -> tuple[int, ...]:
    from toolkit.matmul.distributed import in_torchrun, torchrun_rank
    from toolkit.matmul.pool import available_cores

    if sweep is None:
        if in_torchrun() and workers is None:
            return (torchrun_rank()[1],)
        return (workers or available_cores(),)
    if workers is not None:
        raise InputError("give either --workers or --sweep-workers, not both")
    try:
        counts = tuple(int(item) for item in sweep.split(",") if item.strip())
    except ValueError:
        raise InputError(
            f"--sweep-workers {sweep!r} must be comma-separated integers, e.g. 1,2,4,8"
        ) from None
    if not counts or min(counts) < 1 or max(counts) > MAX_WORKERS:
        raise InputError(f"--sweep-workers {sweep!r}: each count must be between 1 and {MAX_WORKERS}")
    return tuple(sorted(set(counts)))


def _inputs(
    a_path: Path | None,
    b_path: Path | None,
    size: int | None,
    n: int | None,
    k: int | None,
    m: int | None,
    dtype: str | None,
    seed: int,
    kernel: str,
) -> tuple[np.ndarray, np.ndarray]:
    """A and B from the files, or random with the requested shape."""
    from toolkit.studies.matmul import load_inputs, make_inputs

    if a_path is not None or b_path is not None:
        if a_path is None or b_path is None:
            raise InputError("--a and --b go together: give both .npy files, or neither for random inputs")
        if any(value is not None for value in (size, n, k, m)):
            raise InputError("--size/--n/--k/--m describe random inputs; drop them when reading --a/--b")
        return load_inputs(a_path, b_path, dtype)
    default = size or DEFAULT_SIZE[kernel]
    return make_inputs(n or default, k or default, m or default, dtype or "float64", seed)


def _describe_inputs(a_path: Path | None, b_path: Path | None, seed: int) -> str:
    return f"files {a_path}, {b_path}" if a_path is not None else f"random, seed {seed}"


@app.command(
    "matmul",
    short_help="Block-parallel multiprocess matrix product, verified and timed.",
    help="How a matrix product splits across processes, and what the split costs: a block-parallel "
    "C = A @ B on worker processes (or torch.distributed ranks), verified against a plain product "
    "and timed against NumPy's own multi-threaded matmul. Ctrl-C / SIGTERM end it cleanly.",
)
def matmul_command(
    size: Size = None,
    n: Rows = None,
    k: Inner = None,
    m: Cols = None,
    dtype: MatmulDtype = None,
    seed: Seed = 0,
    a_path: FileA = None,
    b_path: FileB = None,
    workers: Workers = None,
    sweep_workers: SweepWorkers = None,
    split: Split = "k",
    kernel: Kernel = "blas",
    repeat: Repeat = 5,
    check: Check = "reference",
    backend: BackendOption = "pool",
    device: MatmulDevice = "cpu",
    plot: PlotPath = MATMUL_PLOT,
    json: opt.Json = False,
) -> None:
    from toolkit.device import resolve_device
    from toolkit.matmul.distributed import in_torchrun, torchrun_rank
    from toolkit.matmul.torchrun import run_follower
    from toolkit.plots.matmul import save_scaling_plot
    from toolkit.signals import Terminated, exit_now, interruptible
    from toolkit.studies.matmul import MatmulSettings, run_matmul
    from toolkit.tables.matmul import setup_table, speedup_table, timing_table, verification_table

    # torch-distributed: auto is CUDA when a GPU is visible (cuda without one is refused);
    # the process pool runs on the CPU.
    where = resolve_device(device).type if backend == "torch-distributed" else device.replace("auto", "cpu")
    if backend == "torch-distributed" and in_torchrun() and torchrun_rank()[0] != 0:
        run_follower(split, kernel, where)  # rank 0 has the inputs and prints the report
        return
    counts = _worker_counts(workers, sweep_workers)
    if len(counts) > 1:
        check_output_file(plot, "plot", PLOT_SUFFIXES)
    settings = MatmulSettings(
        split=split,
        kernel=kernel,
        workers=counts,
        repeat=repeat,
        backend=backend,
        device=where,
        check_freivalds=check == "freivalds",
    )
    out = Output(json)
    try:
        with interruptible():
            a, b = _inputs(a_path, b_path, size, n, k, m, dtype, seed, kernel)
            settings = replace(settings, inputs=_describe_inputs(a_path, b_path, seed))
            with out.progress() as progress:
                result = run_matmul(a, b, settings, progress)
    except KeyboardInterrupt:
        exit_now(130, "interrupted")
    except Terminated as exc:
        exit_now(exc.exit_code, str(exc))
    if len(result.runs) > 1:
        out.save("scaling plot", functools.partial(save_scaling_plot, result, plot))
    tables = (setup_table(result), timing_table(result), speedup_table(result), verification_table(result))
    out.finish(result.to_dict(), *tables)
    if not result.correct:
        raise SystemExit(1)  # a wrong product must not look like success to a script
