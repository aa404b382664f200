"""``toolkit load-weights``: load a checkpoint in the supplied format and prove it reproduces its examples.

The options ``Weights``, ``Examples``, ``Mapping``, ``HeadsSearch`` and ``Atol`` are shared with other
commands that read checkpoints (``ablate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli import options as opt
from toolkit.cli.app import app
from toolkit.cli.output import note, print_json, progress_bar, show
from toolkit.device import resolve_device
from toolkit.tables.weights import config_table, examples_table, head_search_table
from toolkit.weights import check_export_path, export_checkpoint, load_checkpoint, shipped_files

CHECKPOINT = "Checkpoint"

Weights = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Checkpoint (.safetensors, .pt, .pth) in SPEC.md's supplied format, or a toolkit export. "
        "Default: the shipped weights/reference_model.safetensors, looked up in ./weights, then in the "
        "source tree the package was installed from.",
        rich_help_panel=CHECKPOINT,
    ),
]
Examples = Annotated[
    Path | None,
    typer.Option(
        "--examples",
        help="Reference outputs: .safetensors with input_ids_<i> / logits_<i>, or a .pt list of "
        "{'input_ids': [S], 'logits': [S, V]}. Default: the shipped examples when --weights is not given.",
        rich_help_panel=CHECKPOINT,
    ),
]
Mapping = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        help="JSON key mapping: foreign key -> toolkit parameter, and the transform (see "
        "weights/keys_mapping.json). Default: the built-in mapping of the supplied format.",
        rich_help_panel=CHECKPOINT,
    ),
]
HeadsSearch = Annotated[
    int | None,
    typer.Option(
        "--heads",
        min=1,
        help="Attention heads (in no tensor shape). Default: a toolkit export's own; else every divisor "
        "of d_model is tried against the examples; else 2.",
        rich_help_panel=CHECKPOINT,
    ),
]
Atol = Annotated[
    float,
    typer.Option(
        "--atol",
        min=0.0,
        help="Largest |logit difference| that still counts as reproduced (float32).",
        rich_help_panel=CHECKPOINT,
    ),
]
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
    help="Load a checkpoint in the supplied format (or a toolkit export), read its config off the shapes, "
    "find its head count, and prove it reproduces reference logits. Exit 0: all examples match; "
    "1: some do not; 2: bad input.",
)
def load_weights_command(
    weights: Weights = None,
    examples: Examples = None,
    mapping: Mapping = None,
    heads: HeadsSearch = None,
    atol: Atol = 1e-4,
    device: opt.Device = "auto",
    export: Export = None,
    json: opt.Json = False,
) -> None:
    if export is not None:
        check_export_path(export)
    if weights is None:
        weights, shipped_examples = shipped_files()
        examples = shipped_examples if examples is None else examples
    torch_device = resolve_device(device)
    with progress_bar() as progress:
        model, report = load_checkpoint(
            weights,
            examples=examples,
            mapping=mapping,
            n_heads=heads,
            atol=atol,
            device=torch_device,
            progress=progress,
        )
    exported = None
    if export is not None and report.passed:
        exported = str(export_checkpoint(model, export))
        note(f"wrote {exported} (toolkit names, config in its metadata; read it back with --weights)")
    elif export is not None:
        note(f"not exported to {export}: the model does not reproduce its examples")
    if json:
        print_json({**report.to_dict(), "exported_to": exported})
    else:
        show(config_table(report))
        if report.head_trials:
            show(head_search_table(report))
        if report.results:
            show(examples_table(report))
        show(report.summary)
    if not report.passed:
        raise typer.Exit(code=1)
