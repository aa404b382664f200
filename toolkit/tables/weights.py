"""Tables for ``toolkit load-weights``."""

from __future__ import annotations

from rich.table import Table

from toolkit.errors import setting
from toolkit.tables import fmt_float, fmt_int
from toolkit.weights import LoadReport

_SIZE_FIELDS = ("vocab_size", "max_seq_len", "d_model", "n_heads", "n_layers", "d_mlp")


def _verdict(passed: bool) -> str:
    return "[green]match[/green]" if passed else "[red]differs[/red]"


def config_table(report: LoadReport) -> Table:
    table = Table(
        title=f"Config read from {report.weights_path} ({report.checkpoint_format} format, "
        f"mapping: {report.mapping})",
        title_justify="left",
    )
    table.add_column("field", justify="left")
    table.add_column("value", justify="right", style="cyan")
    table.add_column("read from", justify="left")
    for name in _SIZE_FIELDS:
        table.add_row(name, fmt_int(getattr(report.config, name)), report.config_sources.get(name, ""))
    table.add_section()
    table.add_row("parameters", fmt_int(report.n_params), "tied LM head counted once", style="bold")
    return table


def head_search_table(report: LoadReport) -> Table:
    table = Table(
        title="Head-count search (n_heads is in no shape; a miss stops at the first example it fails)",
        title_justify="left",
    )
    table.add_column("n_heads", justify="right")
    table.add_column("examples run", justify="right")
    table.add_column("max |Δ logit|", justify="right", style="cyan")
    table.add_column("verdict", justify="left")
    for trial in report.head_trials:
        chosen = trial.n_heads == report.config.n_heads
        table.add_row(
            f"{trial.n_heads}{' *' if chosen else ''}",
            str(trial.examples_run),
            fmt_float(trial.max_abs_diff),
            _verdict(trial.passed),
            style="bold" if chosen else None,
        )
    return table


def examples_table(report: LoadReport) -> Table:
    table = Table(
        title=f"Logits against the reference examples ({report.device}, float32, atol {report.atol:g})",
        title_justify="left",
    )
    table.add_column("example", justify="right")
    table.add_column("seq len (tokens)", justify="right")
    table.add_column("max |Δ logit|", justify="right", style="cyan")
    table.add_column("RMSE", justify="right")
    table.add_column("verdict", justify="left")
    for result in report.results:
        table.add_row(
            str(result.index),
            fmt_int(result.seq_len),
            fmt_float(result.max_abs_diff),
            fmt_float(result.rmse),
            _verdict(result.passed),
        )
    return table


def load_summary(report: LoadReport) -> str:
    """The verdict in words: pass/fail, and how the head count was found."""
    lines = []
    heads = report.config.n_heads
    if report.n_heads_source == "search":
        others = [t.n_heads for t in report.head_trials if not t.passed]
        matching = report.heads_matching
        if len(matching) == 1:
            lines.append(
                f"n_heads={heads} found by search: it reproduces the examples; "
                f"{', '.join(map(str, others)) or 'no other divisor'} did not."
            )
        elif matching:
            lines.append(
                f"n_heads {', '.join(map(str, matching))} all reproduce the examples, which cannot "
                f"tell them apart; kept {heads}. Pass {setting('n_heads')}, or examples longer than one "
                "token."
            )
        else:
            lines.append(
                "no head count reproduces the examples (tried every divisor of "
                f"d_model={report.config.d_model}); closest: n_heads={heads}."
            )
    else:
        lines.append(f"n_heads={heads} from {report.n_heads_source}.")
    if not report.verified:
        lines.append("LOADED: keys and shapes match; no examples given, so outputs are not verified.")
    elif report.passed:
        lines.append(
            f"PASS: all {len(report.results)} examples reproduced within atol {report.atol:g} "
            f"(max abs diff {report.max_abs_diff:.3g})."
        )
    else:
        failed = sum(not r.passed for r in report.results)
        lines.append(
            f"FAIL: {failed} of {len(report.results)} examples differ by more than atol {report.atol:g} "
            f"(max abs diff {report.max_abs_diff:.3g})."
        )
    return "\n".join(lines)
