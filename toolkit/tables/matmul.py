"""Tables for ``toolkit matmul``: the set-up, the timings per worker count, the verification."""

from __future__ import annotations

from rich.table import Table

from toolkit.matmul.verify import FreivaldsCheck
from toolkit.studies.matmul import MatmulResult
from toolkit.tables import fmt_float
from toolkit.timing.stats import Measurement


def _ms(timings: Measurement) -> str:
    return f"{fmt_float(timings.median_ms)} ± {fmt_float(timings.iqr_ms / 2, 2)}"


def setup_table(result: MatmulResult) -> Table:
    """What was multiplied, how it was split, and the one-off costs (copy into shared memory, start-up)."""
    table = Table(title="Parallel matrix product", title_justify="left", show_header=False)
    table.add_column("what", justify="left")
    table.add_column("value", justify="left", style="cyan")
    size = f"A {result.n}×{result.k} @ B {result.k}×{result.m}, {result.dtype} ({result.inputs})"
    table.add_row("product", size)
    table.add_row("split / kernel", f"{result.split} / {result.kernel}")
    table.add_row("backend", f"{result.backend}: {result.backend_detail}")
    table.add_row("cores available", str(result.cores))
    table.add_row("copy of A, B into shared memory", f"{fmt_float(result.copy_ms)} ms (once)")
    for run in result.runs:
        noun = ("worker" if result.backend == "pool" else "rank") + ("s" if run.workers != 1 else "")
        what = noun if result.backend == "pool" else f"{noun} + process group"
        line = f"{fmt_float(run.start_ms)} ms"
        if run.scatter_ms is not None:
            line += f", then {fmt_float(run.scatter_ms)} ms to send each rank its blocks"
        table.add_row(f"start-up, {run.workers} {what}", line)
    table.add_row("timings", f"median ± half-IQR of {result.repeat} interleaved rounds, after one warm-up")
    return table


def timing_table(result: MatmulResult) -> Table:
    """One row per worker count: the three interleaved timings."""
    table = Table(title="Time in ms: median ± half the IQR", title_justify="left")
    table.add_column("workers", justify="right")
    table.add_column("parallel", justify="right", style="cyan")
    table.add_column("NumPy matmul\n(all cores)", justify="right")
    table.add_column(f"1 process, 1 thread\n({result.kernel})", justify="right")
    for run in result.runs:
        table.add_row(str(run.workers), _ms(run.parallel), _ms(run.numpy), _ms(run.serial))
    return table


def speedup_table(result: MatmulResult) -> Table:
    """One row per worker count: the rate and the speed-ups (ratios of the medians)."""
    ops = "GOP/s" if result.dtype == "int64" else "GFLOP/s"
    table = Table(title="Rate and speed-up of the parallel product", title_justify="left")
    table.add_column("workers", justify="right")
    table.add_column("BLAS threads\nper worker", justify="right")
    table.add_column(ops, justify="right", style="cyan")
    table.add_column("× NumPy", justify="right", style="bold")
    table.add_column("× 1 process", justify="right", style="bold")
    table.add_column(f"efficiency\n(÷ min(workers, {result.cores}))", justify="right")
    for run in result.runs:
        table.add_row(
            str(run.workers),
            str(run.blas_threads),
            fmt_float(run.gflops),
            f"{run.speedup_vs_numpy:.2f}×",
            f"{run.speedup_vs_serial:.2f}×",
            f"{run.efficiency:.0%}",
        )
    return table


def verification_table(result: MatmulResult) -> Table:
    """The parallel C against the plain product, per worker count."""
    table = Table(title=f"Verification against {result.runs[0].verification.reference}", title_justify="left")
    table.add_column("workers", justify="right")
    table.add_column("max\n|C - C_ref|", justify="right")
    table.add_column("largest bound\n2γ_K·|A||B|", justify="right")
    table.add_column("worst\nerror/bound", justify="right")
    table.add_column("verdict", justify="left")
    checks = [run.verification.freivalds for run in result.runs if run.verification.freivalds is not None]
    if checks:
        table.add_column(f"Freivalds\n({checks[0].rounds} vectors)", justify="left")
    for run in result.runs:
        check = run.verification
        style = "green" if check.correct else "bold red"
        row = [
            str(run.workers),
            fmt_float(check.max_abs_err),
            "exact" if check.exact else fmt_float(check.bound),
            "—" if check.exact else fmt_float(check.worst_ratio),
            f"[{style}]{check.verdict}[/{style}]",
        ]
        if checks:
            row.append(_freivalds(check.freivalds) if check.freivalds is not None else "—")
        table.add_row(*row)
    return table


def _freivalds(check: FreivaldsCheck) -> str:
    verdict = "passed" if check.passed else "[bold red]FAILED[/bold red]"
    if check.miss_probability > 0:
        return f"{verdict}, P(miss) ≤ {check.miss_probability:.0e}"
    return f"{verdict}, {fmt_float(check.worst_ratio, 2)} of tol."
