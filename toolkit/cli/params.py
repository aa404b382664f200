"""``toolkit params``: model size, bytes per dtype, and measured memory."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.cli import options as opt
from toolkit.cli.app import app
from toolkit.cli.output import Output, flagged


@app.command("params", help="Model size: parameters per component, bytes per dtype, measured RAM.")
def params_command(
    config_file: opt.ConfigFile = None,
    weights: opt.ModelWeights = None,
    checkpoint_format: opt.Format = "auto",
    vocab: opt.Vocab = None,
    max_seq_len: opt.MaxSeqLen = None,
    d_model: opt.DModel = None,
    heads: opt.Heads = None,
    layers: opt.Layers = None,
    mlp: opt.Mlp = None,
    eps: opt.Eps = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "float32",
    seq_len: opt.SeqLen = None,
    batch: opt.Batch = 1,
    measure: Annotated[
        bool, typer.Option("--measure/--no-measure", help="Measure memory (builds and runs the model).")
    ] = True,
    json: opt.Json = False,
) -> None:
    config = opt.model_config(  # a config that cannot exist fails here, before torch is imported
        config_file, vocab, max_seq_len, d_model, heads, layers, mlp, eps, weights, checkpoint_format
    )
    from toolkit.device import resolve_device, resolve_dtype
    from toolkit.studies.params import count_report, measure_params
    from toolkit.tables.params import (
        bytes_table,
        components_table,
        kv_cache_table,
        memory_table,
        summary_text,
    )

    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    if measure:
        report = measure_params(config, torch_device, torch_dtype, seq_len=seq_len, batch=batch)
    else:
        report = count_report(config, dtype)
    tables = [components_table(report), bytes_table(report), kv_cache_table(report)]
    if report.memory is not None:
        tables.append(memory_table(report))
    out = Output(json)
    data = {**report.to_dict(), "summary": summary_text(report)}
    if report.memory_skipped is not None:
        out.note(report.memory_skipped)
        data["memory_skipped"] = flagged(report.memory_skipped)
    out.finish(data, *tables, summary_text(report))
