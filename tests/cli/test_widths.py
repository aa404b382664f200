"""Every command's tables fit a 100-column terminal: no number, label or header is cut to '…'."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from tiny import TINY_FLAGS, TINY_TRAIN
from typer.testing import CliRunner

from toolkit.cli import app, output

runner = CliRunner()
WIDTH = 100
COMMANDS = {
    "params": ["params", *TINY_FLAGS],
    "load-weights": ["load-weights"],
    "latency": ["latency", *TINY_FLAGS, "--values", "1,3", "--budget", "0.05", "--seq-len", "8", "--no-plot"],
    "ablate": ["ablate", "--no-latency", "--no-plot", "--device", "cpu"],
    "layernorm-compare": [
        "layernorm-compare",
        "--device",
        "cpu",
        "--shapes",
        "64x32,16384x1024",
        "--budget",
        "0.05",
        "--no-plot",
        *TINY_TRAIN,
    ],
    "matmul": ["matmul", "--size", "64", "--workers", "2", "--repeat", "2", "--check", "freivalds"],
    "ablate --train": [
        *("ablate", "--train", "--device", "cpu", "--d-model", "16", "--layers", "1", "--mlp", "32"),
        *("--seq-len", "16", "--tokens-per-step", "64", "--steps", "3", "--seeds", "2", "--no-plot"),
        *("--residual", "no-mlp-skip", "--ffn", "swiglu"),
    ],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_tables_fit_100_columns(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered on a 100-column terminal, nothing is elided and no line is wider than the terminal."""
    terminal = Console(file=io.StringIO(), width=WIDTH, force_terminal=True, color_system=None)
    monkeypatch.setattr(output, "console", terminal)
    args = COMMANDS[command]
    if command == "layernorm-compare":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 100, encoding="utf-8")
        args = [*args, "--data", str(corpus)]
    monkeypatch.chdir(tmp_path)  # plots and exports, if any, land here
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = terminal.file.getvalue()  # type: ignore[attr-defined]
    assert text.strip(), "the command printed no table"
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= WIDTH
