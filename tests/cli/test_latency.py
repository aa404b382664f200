"""`toolkit latency` through Typer's CliRunner on a tiny config: table, JSON, CSV, plots, bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_checks import assert_one_line_error
from tiny import TINY_FLAGS
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.studies import latency as latency_study

runner = CliRunner()
FAST = [*TINY_FLAGS, "--device", "cpu", "--budget", "0.1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Put torch's thread count back after a test that sets --threads."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _invoke(args: list[str]) -> Any:
    return runner.invoke(app, ["latency", *args])


@pytest.mark.usefixtures("restore_threads")
def test_sweep_prints_table_writes_plot_and_csv(tmp_path: Path) -> None:
    """A heads sweep prints its table and trend, and writes the PNG and a CSV row per value."""
    plot, table = tmp_path / "heads.png", tmp_path / "rows.csv"
    result = _invoke(
        [
            *FAST,
            "--vary",
            "heads",
            "--values",
            "1,3,6",
            "--threads",
            "1",
            "--plot",
            str(plot),
            "--csv",
            str(table),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "median" in result.stdout
    assert "GFLOP/s" in result.stdout
    assert "log-log" in result.stdout
    assert "full S×S" in " ".join(result.stdout.split())  # the caption wraps at the table's width
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["value"] for row in rows] == ["1", "3", "6"]
    assert [row["n_heads"] for row in rows] == ["1", "3", "6"]
    assert {row["threads"] for row in rows} == {"1"}
    assert all(float(row["median_ms"]) > 0 for row in rows)


def test_vary_all_json_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--vary all --json: one object with a summary row and a plot per parameter (short default sweeps)."""
    short = {
        "seq-len": (8, 16),
        "vocab": (32, 61),
        "d-model": (12, 24),
        "heads": (1, 3),
        "layers": (1, 2),
        "mlp": (20, 40),
        "batch": (1, 2),
    }
    for vary, values in short.items():
        monkeypatch.setitem(latency_study.DEFAULT_VALUES, vary, values)
    result = _invoke([*FAST, "--seq-len", "16", "--vary", "all", "--json", "--plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [item["vary"] for item in data["summary"]] == list(short)
    assert [len(sweep["rows"]) for sweep in data["sweeps"]] == [2] * 7
    assert data["sweeps"][0]["context"]["device_name"]
    for vary in short:
        assert (tmp_path / f"latency_{vary}.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--vary", "width"], "--vary"),
        (["--vary", "heads", "--values", "1,two"], "comma-separated integers"),
        (["--vary", "heads", "--values", "3,5"], "do not divide d_model=24"),
        (["--vary", "d-model", "--values", "24,25"], "multiples of heads=3"),
        (["--vary", "seq-len", "--values", "8,64"], "64 exceed max_seq_len=32"),
        (["--vary", "all", "--values", "1,2"], "--values cannot be used with --vary all"),
        (["--vary", "layers", "--budget", "0"], "--budget"),
        (["--vary", "layers", "--seq-len", "64"], "exceeds max_seq_len=32"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str, tmp_path: Path) -> None:
    """Unknown --vary, malformed or impossible --values, bad budget: one line on stderr, exit 2."""
    plot = tmp_path / "never.png"
    assert_one_line_error(_invoke([*FAST, *args, "--plot", str(plot)]), fragment)
    assert not plot.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible, so --device cuda is valid")
def test_cuda_without_gpu_is_refused() -> None:
    """--device cuda on a machine without a GPU: one line, exit 2."""
    assert_one_line_error(_invoke([*TINY_FLAGS, "--device", "cuda"]), "no CUDA GPU")


def test_half_precision_on_cpu_is_flagged_once_and_not_rated_against_itself() -> None:
    """bfloat16 on the CPU: one warning, and the % matmul reference is a float32 product."""
    result = _invoke(
        [*FAST, "--vary", "heads", "--values", "1,3", "--dtype", "bfloat16", "--no-plot", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["context"]["dtype"] == "bfloat16"
    assert data["matmul_dtype"] == "float32"
    emulated = [m for m in data["messages"] if "bfloat16 on the CPU" in m["text"]]
    assert [m["level"] for m in emulated] == ["warning"]
    for row in data["rows"]:  # the rate is the model's FLOP over its time, against float32's
        assert row["pct_of_matmul"] == pytest.approx(100 * row["gflops"] / data["matmul_gflops"])


def test_out_of_memory_mid_run_prints_the_rows_then_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """An allocation failing after admission (here: the heads=3 model's forward, from its 30th call)
    prints the rows timed before it, then one line naming the problem, exit 2, no traceback."""
    real_build = latency_study.build_forward

    def build(config: Any, *args: Any, **kwargs: Any) -> Any:
        forward, compile_s = real_build(config, *args, **kwargs)
        if config.n_heads != 3:
            return forward, compile_s
        calls = [0]

        def failing() -> Any:
            calls[0] += 1
            if calls[0] >= 30:
                raise RuntimeError(
                    "[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"
                )
            return forward()

        return failing, compile_s

    monkeypatch.setattr(latency_study, "build_forward", build)
    args = [*TINY_FLAGS, "--device", "cpu", "--budget", "30", "--target-ci", "0.1", "--values", "1,3"]
    result = _invoke([*args, "--json", "--no-plot"])
    assert result.exit_code == 2, result.output
    data = json.loads(result.stdout)
    assert data["stop_reason"] == "out_of_memory"
    assert [row["value"] for row in data["rows"]] == [1, 3]
    assert all(row["n_samples"] >= 2 for row in data["rows"])
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("toolkit: error: ran out of memory while timing the heads sweep")
    assert "Traceback" not in result.stderr
