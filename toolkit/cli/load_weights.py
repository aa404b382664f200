"""``toolkit load-weights``: load a checkpoint in the supplied format and prove it reproduces its examples."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import options as opt
from toolkit.cli.app import app
from toolkit.cli.output import Output, flagged
from toolkit.signals import stop_requested

Export = Annotated[
    Path | None,
    typer.Option(
        "--export",
        help="Write the loaded model in the toolkit's own names to this .safetensors file (its config "
        "in the metadata), which --weights reads back. Skipped when the examples do not match.",
    ),
]


@app.command(
    "load-weights",
    short_help="Load a foreign checkpoint and prove it reproduces reference logits.",
    help="Load a checkpoint (a Hugging Face GPT-2 directory, a nanoGPT ckpt.pt, the supplied format or a "
    "toolkit export), take its config from its own metadata or read it off the shapes, find what no "
    "shape records (the head count), and prove it reproduces reference logits. Exit 0: all examples match; "
    "1: some do not; 2: bad input.",
)
def load_weights_command(
    weights: opt.Weights = None,
    checkpoint_format: opt.Format = "auto",
    examples: opt.Examples = None,
    mapping: opt.Mapping = None,
    heads: opt.HeadsSearch = None,
    atol: opt.Atol = 1e-4,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "float32",
    export: Export = None,
    text: opt.Text = None,
    tokenizer: opt.Tokenizer = None,
    text_encoding: opt.TextEncoding = "utf-8",
    text_window: opt.TextWindow = None,
    json: opt.Json = False,
) -> None:
    from toolkit.device import resolve_device, resolve_dtype
    from toolkit.tables.text import text_loss_table
    from toolkit.tables.weights import (
        config_table,
        examples_table,
        head_search_table,
        hypotheses_table,
        load_summary,
    )
    from toolkit.text.evaluation import prepare_text, text_loss_report
    from toolkit.weights import (
        check_export_path,
        export_checkpoint,
        load_checkpoint,
        shipped_files,
    )

    if export is not None:
        check_export_path(export)
    if weights is None:
        weights, shipped_examples = shipped_files()
        examples = shipped_examples if examples is None else examples
    torch_device = resolve_device(device)
    out = Output(json)
    with out.progress() as progress:
        model, report = load_checkpoint(
            weights,
            examples=examples,
            mapping=mapping,
            n_heads=heads,
            atol=atol,
            device=torch_device,
            checkpoint_format=checkpoint_format,
            progress=progress,
            dtype=resolve_dtype(dtype),
        )
        eval_text, no_text = prepare_text(model.config, weights, text, tokenizer, text_encoding, text_window)
        text_report = None
        if eval_text is not None and stop_requested() is None:  # after a signal: the load's results only
            text_report = text_loss_report(model, eval_text, progress=progress)
    if no_text is not None:
        out.note(no_text)
    exported = None
    if export is not None and report.passed:
        written = out.save("export", functools.partial(export_checkpoint, model, export))
        exported = str(written) if written is not None else None
        if written is not None:
            out.note("the export has toolkit names and its config in its metadata; read it with --weights")
    elif export is not None:
        out.note(f"not exported to {export}: the model does not reproduce its examples")
    tables = [config_table(report)]
    if report.head_trials and len(report.head_trials) > 1:
        tables.append(head_search_table(report))
    if report.search is not None:
        tables.append(hypotheses_table(report))
    if report.results:
        tables.append(examples_table(report))
    if text_report is not None:
        tables.append(text_loss_table(text_report))
    summary = load_summary(report)
    if report.search is not None and not report.search.complete:
        summary = "no verdict: a signal stopped the search before every hypothesis was tried"
    data = {**report.to_dict(), "exported_to": exported, "text": text_report}
    out.finish(data, *tables, flagged(summary))
    if not report.passed:
        raise typer.Exit(code=1)
