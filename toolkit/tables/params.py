"""Tables for ``toolkit params``."""

from __future__ import annotations

from rich.table import Table

from toolkit.studies.params import BYTES_PER_ELEMENT, ComponentCount, ParamsReport
from toolkit.tables import fmt_bytes, fmt_int

BLOCKS_SHOWN = 4
"""Deeper models show their identical blocks as one row per part ("each of 30 blocks: MLP")."""


def components_table(report: ParamsReport) -> Table:
    table = Table(title="Parameters by component", title_justify="left")
    table.add_column("component", justify="left")
    table.add_column("parameters", justify="right", style="cyan")
    table.add_column("share", justify="right")
    for component, params, shared_with in _shown_rows(report):
        if shared_with is not None:
            table.add_row(component, f"shared with {shared_with}", "—", style="dim")
            continue
        table.add_row(component, fmt_int(params), f"{100 * params / report.total_params:.1f}%")
    table.add_section()
    for part, params in report.attention_parts.items():
        if params:
            share = f"{100 * params / report.total_params:.1f}%"
            table.add_row(f"  of which attention {part} (all blocks)", fmt_int(params), share, style="dim")
    head = "tied head counted once" if report.config.tied_head else "separate LM head"
    table.add_row(f"total ({head})", fmt_int(report.total_params), "100.0%", style="bold")
    return table


def _shown_rows(report: ParamsReport) -> list[tuple[str, int, str | None]]:
    """The component rows; for a deep model with identical blocks, one row per part of a block with
    the parameters of all of them (its label says how many each holds)."""
    rows: list[ComponentCount] = report.by_component
    n_layers = report.config.n_layers
    block_rows = [row for row in rows if row.component.startswith("block ")]
    if n_layers <= BLOCKS_SHOWN:
        return [(row.component, row.params, row.shared_with) for row in rows]
    shown: list[tuple[str, int, str | None]] = []
    parts: dict[str, list[int]] = {}
    for row in block_rows:
        parts.setdefault(row.component.split(" ", 2)[2], []).append(row.params)
    for row in rows:
        if row.component.startswith("block 0 "):
            part = row.component.split(" ", 2)[2]
            each = parts[part]
            label = f"blocks 0–{n_layers - 1}: {part} ({fmt_int(each[0])} each)"
            shown.append(
                (label if len(set(each)) == 1 else f"blocks 0–{n_layers - 1}: {part}", sum(each), None)
            )
        elif not row.component.startswith("block "):
            shown.append((row.component, row.params, row.shared_with))
    return shown


def kv_cache_table(report: ParamsReport) -> Table:
    config = report.config
    context = config.max_seq_len
    table = Table(
        title="KV cache (keys and values of every layer)",
        title_justify="left",
        caption=f"2 × {config.n_layers} layers × {config.kv_heads} kv heads × {config.head_dim} dims = "
        f"{fmt_int(report.kv_values_per_token)} values/token",
        caption_justify="left",
    )
    table.add_column("dtype", justify="left")
    table.add_column("per token", justify="right", style="cyan")
    table.add_column(f"full context ({fmt_int(context)} tokens)", justify="right", style="cyan")
    for dtype, size in BYTES_PER_ELEMENT.items():
        per_token = report.kv_values_per_token * size
        style = "bold" if size == report.element_size else None
        table.add_row(dtype, f"{per_token / 2**10:,.1f} KiB", fmt_bytes(per_token * context), style=style)
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
        kv = report.kv_cache_bytes_per_token / 2**10
        return f"{text}; the KV cache takes {kv:,.1f} KiB per token."
    memory = report.memory
    grew = "CUDA memory" if memory.device == "cuda" else "RSS"
    build_mib, activation_mib = memory.build_bytes / 2**20, memory.activation_bytes / 2**20
    return (
        f"{text}; building the model grew {grew} by {build_mib:.1f} MiB "
        f"({memory.build_bytes / weights:.2f}× the weights), and one forward pass at batch "
        f"{memory.batch} × {memory.seq_len} tokens needed {activation_mib:.1f} MiB more for "
        "activations and temporaries."
    )
