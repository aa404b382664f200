"""Tables for ``toolkit params``."""

from __future__ import annotations

from rich.table import Table

from toolkit.studies.params import ParamsReport
from toolkit.tables import fmt_bytes, fmt_int


def components_table(report: ParamsReport) -> Table:
    table = Table(title="Parameters by component", title_justify="left")
    table.add_column("component", justify="left")
    table.add_column("parameters", justify="right", style="cyan")
    table.add_column("share", justify="right")
    for row in report.by_component:
        if row.shared_with is not None:
            table.add_row(row.component, f"shared with {row.shared_with}", "—", style="dim")
            continue
        table.add_row(row.component, fmt_int(row.params), f"{100 * row.params / report.total_params:.1f}%")
    table.add_section()
    table.add_row("total (tied head counted once)", fmt_int(report.total_params), "100.0%", style="bold")
    return table


def bytes_table(report: ParamsReport) -> Table:
    table = Table(title="Weight bytes by dtype", title_justify="left")
    table.add_column("dtype", justify="left")
    table.add_column("bytes/param", justify="right")
    table.add_column("weights", justify="right", style="cyan")
    for dtype, n_bytes in report.bytes_by_dtype.items():
        table.add_row(dtype, str(n_bytes // report.total_params), fmt_bytes(n_bytes))
    return table


def memory_table(report: ParamsReport) -> Table:
    memory = report.memory
    assert memory is not None
    table = Table(
        title=f"Measured memory on {report.device_name} ({report.dtype}, {memory.method})",
        title_justify="left",
    )
    table.add_column("measurement", justify="left")
    table.add_column("memory", justify="right", style="cyan")
    table.add_row("weights, computed (params × bytes)", fmt_bytes(memory.weights_bytes_expected))
    table.add_row("growth when the model is built", fmt_bytes(memory.build_bytes))
    table.add_row(
        f"forward pass peak above build (activations, batch {memory.batch} × {memory.seq_len} tokens)",
        fmt_bytes(memory.activation_bytes),
    )
    table.add_row("build + forward peak", fmt_bytes(memory.forward_peak_bytes), style="bold")
    return table


def summary_text(report: ParamsReport) -> str:
    """One sentence relating the parameter count to the RAM it takes."""
    bytes_per = report.element_size
    weights = report.total_params * bytes_per
    text = (
        f"{report.total_params:,} parameters × {bytes_per} bytes ({report.dtype}) = "
        f"{weights / 2**20:.1f} MiB of weights"
    )
    if report.memory is None:
        return text + "."
    memory = report.memory
    grew = "CUDA memory" if memory.device == "cuda" else "RSS"
    build_mib, activation_mib = memory.build_bytes / 2**20, memory.activation_bytes / 2**20
    return (
        f"{text}; building the model grew {grew} by {build_mib:.1f} MiB "
        f"({memory.build_bytes / weights:.2f}× the weights), and one forward pass at batch "
        f"{memory.batch} × {memory.seq_len} tokens needed {activation_mib:.1f} MiB more for "
        "activations and temporaries."
    )
