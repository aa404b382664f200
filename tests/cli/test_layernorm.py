"""`toolkit layernorm-compare` through Typer's CliRunner: tiny runs, JSON, plots, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error
from tiny import TINY_TRAIN
from typer.testing import CliRunner, Result

from toolkit.cli import app

runner = CliRunner()
FAST = ["--device", "cpu", "--shapes", "64x32", "--budget", "0.05", *TINY_TRAIN]


def _invoke(args: list[str]) -> Result:
    return runner.invoke(app, ["layernorm-compare", *args])


def test_json_has_every_part_and_plots_are_written(tmp_path: Path) -> None:
    """All four parts in one JSON object; the five PNGs land in --plots-dir."""
    result = _invoke([*FAST, "--no-numerics", "--no-memory", "--json", "--plots-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["numerics"] is None
    assert data["memory"] is None
    speed_rows = data["speed"]["rows"]
    assert {r["implementation"] for r in speed_rows} == {"torch", "custom-numba", "copy"}
    assert all(r["gb_per_s"] > 0 for r in speed_rows)
    runs = data["training"]["runs"]
    assert [r["norm"] for r in runs] == ["torch", "custom", "rms", "none", "batch"]
    assert all(len(r["train_losses"]) == 4 for r in runs)
    names = sorted(Path(p).name for p in data["plots"])
    assert names == [
        "gradient_flow.png",
        "hidden_correlation.png",
        "layernorm_speed.png",
        "metrics_comparison.png",
        "training_curves.png",
    ]
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)


def test_tables_for_numerics_and_memory() -> None:
    """Without --json: the numerics and memory tables, titles and the one-pass row included."""
    result = runner.invoke(
        app,
        ["layernorm-compare", "--device", "cpu", "--no-speed", "--no-train", "--no-plot"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "LayerNorm numerics" in result.stdout
    assert "one-pass" in result.stdout
    assert "LayerNorm memory" in result.stdout
    assert "NaN" in result.stdout  # the one-pass formula at 1e4 + N(0,1)


def test_training_tables_and_data_file(tmp_path: Path) -> None:
    """--data trains on a given file; the table compares each norm with torch LayerNorm."""
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 200, encoding="utf-8")
    args = [*FAST, "--no-numerics", "--no-speed", "--no-memory", "--no-plot", "--data", str(text)]
    result = _invoke([*args, "--norms", "torch,rms"])
    assert result.exit_code == 0, result.output
    assert "Training quality" in result.stdout
    assert str(text) in result.stdout.replace("\n", "")
    assert "RMSNorm" in result.stdout
    assert "%)" in result.stdout  # the percentage against torch LayerNorm


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shapes", "64by32"], "is not ROWSxSIZE"),
        (["--shapes", "0x32"], "positive sizes"),
        (["--norms", "torch,layer"], "unknown norm"),
        (["--data", "/nonexistent/corpus.txt"], "does not exist"),
        (["--data", "."], "is a directory, not a file"),
        (["--data", "/dev/null"], "is not a regular file"),
        (["--heads", "3"], "divisible"),
        (["--lr", "0"], "learning rate"),
        (["--dtype", "float8"], "Invalid value"),
        (["--no-numerics", "--no-speed", "--no-memory", "--no-train"], "nothing to measure"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    """Bad options: exit 2, one line on stderr naming the problem, no traceback, nothing written."""
    result = _invoke(
        ["--device", "cpu", "--no-numerics", "--no-speed", "--no-memory", "--plots-dir", str(tmp_path), *args]
    )
    assert_one_line_error(result, message)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_gpu_is_refused() -> None:
    """--device cuda on a machine without a GPU is one line and exit 2."""
    assert_one_line_error(_invoke(["--device", "cuda", "--no-train"]), "no CUDA GPU")


def test_norm_rms_studies_the_rmsnorm(tmp_path: Path) -> None:
    """--norm rms: RMSNorm tables and JSON, torch's LayerNorm timed beside it, rmsnorm_speed.png."""
    args = [*FAST, "--norm", "rms", "--no-train", "--json", "--plots-dir", str(tmp_path)]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["numerics"]["norm"] == "rms"
    assert data["memory"]["norm"] == "rms"
    assert {r["implementation"] for r in data["speed"]["rows"]} == {
        "torch",
        "torch-layernorm",
        "custom-numba",
        "copy",
    }
    assert [Path(p).name for p in data["plots"]] == ["rmsnorm_speed.png"]
    tables = _invoke([*FAST, "--norm", "rms", "--no-train", "--no-plot"])
    assert "RMSNorm numerics" in tables.stdout
    assert "torch.nn.RMSNorm" in " ".join(tables.stdout.split())
