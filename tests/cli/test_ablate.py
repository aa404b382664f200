"""`toolkit ablate` through Typer's CliRunner on a tiny exported checkpoint: JSON schema, plot, bad flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_checks import assert_one_line_error
from tiny import TINY
from typer.testing import CliRunner

from toolkit import Transformer
from toolkit.cli import app
from toolkit.weights import Example, export_checkpoint, write_examples

runner = CliRunner()
ROW_KEYS = {
    "change",
    "rmse",
    "mean_abs_diff",
    "std_abs_diff",
    "pct_base_greater",
    "max_abs_diff",
    "kl",
    "top1_agreement",
    "latency",
}
LATENCY_KEYS = {"base_ms", "variant_ms", "diff_ms", "diff_pct", "ci_low_pct", "ci_high_pct", "significant"}
LATENCY_KEYS |= {"significant_raw", "p_value", "p_adjusted", "detectable_pct", "family_size"}  # Holm, the MDE
CLASSIC = [
    "eps 1e-4",
    "no-scale",
    "gelu tanh",
    "residual input-skip",
    "residual no-mlp-skip",
    "residual parallel",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A tiny toolkit export and examples (lengths 1, 7 and max) whose logits it reproduces."""
    folder = tmp_path_factory.mktemp("ablate")
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    weights = export_checkpoint(model, folder / "tiny.safetensors")
    generator = torch.Generator().manual_seed(1)
    examples = []
    for length in (1, 7, TINY.max_seq_len):
        ids = torch.randint(0, TINY.vocab_size, (length,), generator=generator)
        with torch.no_grad():
            examples.append(Example(ids, model(ids)[0]))
    write_examples(examples, folder / "examples.safetensors")
    return ["--weights", str(weights), "--examples", str(folder / "examples.safetensors"), "--device", "cpu"]


def _run(args: list[str], tmp_path: Path) -> Any:
    return runner.invoke(app, ["ablate", *args, "--plot", str(tmp_path / "ablation.png")])


def test_json_schema_classic_suite(checkpoint: list[str], tmp_path: Path) -> None:
    """No variant flag: six rows with the issue's keys, latency numbers, and a PNG plot."""
    result = _run([*checkpoint, "--json", "--budget", "1", "--seq-len", "8"], tmp_path)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert isinstance(rows, list)
    assert [row["change"] for row in rows] == CLASSIC
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert set(row["latency"]) == LATENCY_KEYS
        assert isinstance(row["latency"]["significant"], bool)
        assert row["latency"]["base_ms"] > 0
        assert row["latency"]["variant_ms"] > 0
        low, mid, high = (row["latency"][k] for k in ("ci_low_pct", "diff_pct", "ci_high_pct"))
        assert low <= mid <= high
        assert row["rmse"] > 0
        assert row["max_abs_diff"] >= row["mean_abs_diff"] > 0
        assert 0 <= row["pct_base_greater"] <= 100
        assert 0 <= row["top1_agreement"] <= 100
        assert row["kl"] >= 0
    plot = tmp_path / "ablation.png"
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_flags_select_rows_without_latency(checkpoint: list[str], tmp_path: Path) -> None:
    """Variant flags combine, one row each; --no-latency leaves latency null; --no-plot writes nothing."""
    args = [*checkpoint, "--json", "--no-latency", "--no-plot", "--eps", "1e-3", "--no-scale"]
    result = _run([*args, "--residual", "parallel", "--residual", "input-skip"], tmp_path)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [row["change"] for row in rows] == [
        "eps 1e-3",
        "no-scale",
        "residual parallel",
        "residual input-skip",
    ]
    assert all(row["latency"] is None for row in rows)
    assert not (tmp_path / "ablation.png").exists()


def test_tables(checkpoint: list[str], tmp_path: Path) -> None:
    """Without --json: the output table, the latency table with its A/A line, and the verdicts."""
    result = _run([*checkpoint, "--gelu", "tanh", "--budget", "1", "--seq-len", "4"], tmp_path)
    assert result.exit_code == 0, result.output
    for text in (
        "Output change",
        "Forward latency",
        "A/A control",
        "Verdict",
        "gelu tanh",
        "of their spread",
    ):
        assert text in result.stdout, text


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--residual", "sideways"], "Invalid value for '--residual': 'sideways' is not one of"),
        (["--gelu", "relu"], "Invalid value for '--gelu': 'relu' is not one of 'none', 'tanh'"),
        (["--norm", "bogus"], "Invalid value for '--norm': 'bogus' is not one of"),
        (["--norm", "rms"], "cannot run with the same weights"),
        (["--eps", "-1"], "norm_eps must be a positive number"),
        (["--eps", "1e-5"], "leaves the model unchanged"),
        (["--residual", "standard"], "leaves the model unchanged"),
        (["--seq-len", "0"], "--seq-len"),
        (["--seq-len", "33"], "max_seq_len=32"),
        (["--batch", "0"], "--batch"),
        (["--budget", "0"], "--budget"),
        (["--device", "tpu"], "--device"),
        (["--bogus-flag"], "--bogus-flag"),
    ],
)
def test_bad_flags_exit_2(checkpoint: list[str], tmp_path: Path, args: list[str], fragment: str) -> None:
    """Bad flags: one line on stderr naming the problem, exit 2, no traceback, no plot."""
    assert_one_line_error(_run([*checkpoint, "--no-latency", *args], tmp_path), fragment)
    assert not (tmp_path / "ablation.png").exists()


def test_missing_weights_exit_2(tmp_path: Path) -> None:
    """A checkpoint that does not exist is refused with one line."""
    result = _run(["--weights", str(tmp_path / "missing.safetensors"), "--no-latency"], tmp_path)
    assert_one_line_error(result, "does not exist")


def test_examples_of_another_model_exit_2(checkpoint: list[str], tmp_path: Path) -> None:
    """Examples the checkpoint does not reproduce: refused, since the ablation would mean nothing."""
    torch.manual_seed(5)
    other = Transformer(TINY).eval()
    ids = torch.arange(5)
    with torch.no_grad():
        write_examples([Example(ids, other(ids)[0])], tmp_path / "other.safetensors")
    args = [checkpoint[0], checkpoint[1], "--examples", str(tmp_path / "other.safetensors"), "--no-latency"]
    assert_one_line_error(_run(args, tmp_path), "does not reproduce its examples")


@pytest.mark.cuda
def test_cuda_latency(checkpoint: list[str], tmp_path: Path) -> None:
    """--device cuda times every variant on the GPU (outputs are still compared in float64 on CPU)."""
    args = [*checkpoint[:4], "--device", "cuda", "--json", "--budget", "2", "--gelu", "tanh", "--no-scale"]
    result = _run(args, tmp_path)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [row["change"] for row in rows] == ["no-scale", "gelu tanh"]
    for row in rows:
        assert set(row["latency"]) == LATENCY_KEYS
        assert row["latency"]["base_ms"] > 0


def test_json_holds_the_notes_too(checkpoint: list[str], tmp_path: Path) -> None:
    """--json: one object on stdout with the notes inside it; the same notes on stderr, after it."""
    result = _run([*checkpoint, "--json", "--no-latency"], tmp_path)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"rows", "text", "messages", "interrupted"}
    assert document["interrupted"] is False
    plot_notes = [m for m in document["messages"] if m["text"].startswith("plot written to")]
    assert plot_notes == [{"level": "note", "text": f"plot written to {tmp_path / 'ablation.png'}"}]
    assert plot_notes[0]["text"] in result.stderr


def test_piped_tables_are_not_cut(checkpoint: list[str], tmp_path: Path) -> None:
    """Into a pipe, tables keep their natural width: no ellipsis, lines wider than 80 columns."""
    command = [sys.executable, "-m", "toolkit", "ablate", *checkpoint, "--no-latency", "--no-plot"]
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": ""}
    )
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > 80
    assert "top-1 agreement" in result.stdout
