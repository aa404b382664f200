"""Tables for ``toolkit load-weights``."""

from __future__ import annotations

import math

from rich.table import Table

from toolkit.errors import setting
from toolkit.tables import fmt_float, fmt_int
from toolkit.weights import LoadReport
from toolkit.weights.verify import SearchResult, gelu_name

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
    config = report.config
    rows = [("norm_eps", f"{config.norm_eps:g}")]
    if config.mlp == "gelu":
        rows.append(("gelu", gelu_name(config.gelu)))
    for name, value in rows:
        table.add_row(name, value, report.config_sources.get(name, "default (not recorded, not searched)"))
    family = _family_rows(report)
    if family:
        table.add_section()
        for name, value in family:
            source = report.config_sources.get("qkv_bias" if name == "biases" else name, "model_type default")
            table.add_row(name, value, source)
    table.add_section()
    head = "tied LM head counted once" if config.tied_head else "separate LM head"
    table.add_row("parameters", fmt_int(report.n_params), head, style="bold")
    return table


def _family_rows(report: LoadReport) -> list[tuple[str, str]]:
    """The model-family fields that differ from GPT-2's (none for a GPT-2 checkpoint)."""
    config = report.config
    rows: list[tuple[str, str]] = []
    if config.norm == "rms":
        rows.append(("norm", "RMSNorm"))
    if config.kv_heads != config.n_heads:
        rows.append(("n_kv_heads", str(config.kv_heads)))
    if config.head_size is not None:
        rows.append(("head_size", str(config.head_size)))
    if config.positions == "rope":
        rows.append(("positions", "RoPE"))
        rows.append(("rope_theta", f"{config.rope_theta:g}"))
        if config.rotary_fraction != 1.0:
            rows.append(("rotary_fraction", f"{config.rotary_fraction:g}"))
        if config.rope_scaling != "none":
            rows.append(("rope_scaling", f"{config.rope_scaling} × {config.rope_factor:g}"))
    if config.mlp != "gelu":
        rows.append(("mlp", "gated SiLU (SwiGLU)"))
    if config.residual == "parallel":
        rows.append(("residual", "parallel"))
    biases = [name for name in ("qkv_bias", "out_bias", "mlp_bias") if getattr(config, name)]
    if config.positions == "rope" or len(biases) < 3:
        rows.append(("biases", ", ".join(b.removesuffix("_bias") for b in biases) or "none"))
    if config.qk_norm:
        rows.append(("qk_norm", "yes"))
    if not config.tied_head:
        rows.append(("tied_head", "no"))
    if config.sliding_window is not None:
        rows.append(("sliding_window", fmt_int(config.sliding_window)))
    return rows


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


def search_text(search: SearchResult) -> str:
    """The hypothesis search in words: best, runner-up and the margin, what cannot be told apart."""
    chosen, runner = search.chosen, search.runner_up
    text = (
        f"hypothesis search ({len(search.trials)} of head count × GELU form × eps, "
        f"{search.elapsed_s:.1f} s): "
        f"best {chosen.label}, max |Δ logit| {chosen.max_abs_diff:.3g}"
    )
    if runner is not None:
        text += f"; runner-up {runner.label}, {runner.max_abs_diff:.3g} on every example"
        if math.isfinite(search.margin):
            text += f" ({search.margin:.3g}× the best's)"
    same = search.indistinguishable
    if same:
        text += (
            f". The examples cannot tell {len(same)} other hypothes{'is' if len(same) == 1 else 'es'} apart "
            f"from it ({'; '.join(t.label for t in same[:4])}{'; ...' if len(same) > 4 else ''}): give "
            "longer or more examples, or the config"
        )
    return text + "."


def hypotheses_table(report: LoadReport, shown: int = 6) -> Table:
    """The best hypotheses of the search, best first (all of them are in --json)."""
    assert report.search is not None
    search = report.search
    ranked = sorted(search.trials, key=lambda t: (not t.passed, t.max_abs_diff))
    table = Table(
        title=f"Hypothesis search: the best {min(shown, len(ranked))} of {len(ranked)} "
        f"(head count × GELU × eps; {search.elapsed_s:.1f} s)",
        title_justify="left",
    )
    table.add_column("n_heads", justify="right")
    table.add_column("GELU", justify="left")
    table.add_column("eps", justify="right")
    table.add_column("examples run", justify="right")
    table.add_column("max |Δ logit|", justify="right", style="cyan")
    table.add_column("verdict", justify="left")
    for trial in ranked[:shown]:
        chosen = trial is search.chosen
        table.add_row(
            f"{trial.n_heads}{' *' if chosen else ''}",
            gelu_name(trial.gelu),
            f"{trial.norm_eps:g}",
            str(trial.examples_run),
            fmt_float(trial.max_abs_diff),
            _verdict(trial.passed),
            style="bold" if chosen else None,
        )
    return table


def examples_table(report: LoadReport) -> Table:
    table = Table(
        title=f"Logits against the reference examples ({report.device}, {report.dtype}, "
        f"atol {report.atol:g})",
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
    search = report.search
    if (
        report.n_heads_source == "search"
        and search is not None
        and len({t.n_heads for t in search.trials}) > 1
    ):
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
    if search is not None:
        lines.append(search_text(search))
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
