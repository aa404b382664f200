"""`toolkit matmul` through Typer's CliRunner: tables, JSON, the sweep plot, .npy inputs, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_checks import assert_one_line_error
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.matmul.shared import segment_prefix

runner = CliRunner()
TINY = ["matmul", "--size", "12", "--repeat", "2"]


def no_segments_left() -> bool:
    if not os.path.isdir("/dev/shm"):  # no POSIX shared memory directory to inspect (macOS)
        return True
    return not [name for name in os.listdir("/dev/shm") if name.startswith(segment_prefix(os.getpid()))]


def test_tables() -> None:
    """The default output: set-up, timings, speed-ups and the verification verdict."""
    result = runner.invoke(app, [*TINY, "--workers", "3", "--split", "grid"])
    assert result.exit_code == 0, result.output
    for text in ("Parallel matrix product", "Time in ms", "× NumPy", "within rounding bound", "naive triple"):
        assert text in result.stdout
    assert no_segments_left()


def test_json_fields() -> None:
    """`--json` has the issue's fields, for int64 bit-identity with Freivalds on top."""
    args = [
        *TINY,
        "--workers",
        "2",
        "--dtype",
        "int64",
        "--check",
        "freivalds",
        "--kernel",
        "naive",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("correct", "max_abs_err", "bound", "parallel_ms", "numpy_ms", "gflops", "speedup_vs_numpy"):
        assert key in report
    assert report["correct"] is True
    assert report["split"] == "k"
    assert report["workers"] == 2
    assert report["max_abs_err"] == 0.0
    run = report["runs"][0]
    assert run["verification"]["verdict"] == "bit-identical"
    assert run["verification"]["freivalds"]["passed"] is True
    assert len(run["timings"]["parallel"]["samples_ms"]) == 2


def test_sweep_writes_the_scaling_plot(tmp_path: Path) -> None:
    """`--sweep-workers` runs each count and saves the plot where --plot says."""
    plot = tmp_path / "scaling.png"
    args = [*TINY, "--sweep-workers", "1,3", "--split", "recursive", "--plot", str(plot), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [run["workers"] for run in report["runs"]] == [1, 3]
    assert plot.stat().st_size > 0
    assert str(plot) in result.stderr


def test_npy_inputs(tmp_path: Path) -> None:
    """A and B from .npy files; the report names them; --dtype converts."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((7, 5)))
    np.save(tmp_path / "b.npy", rng.standard_normal((5, 3)))
    args = ["matmul", "--a", str(tmp_path / "a.npy"), "--b", str(tmp_path / "b.npy"), "--workers", "2"]
    result = runner.invoke(app, [*args, "--repeat", "1", "--dtype", "float32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n"], report["k"], report["m"], report["dtype"]) == (7, 5, 3, "float32")
    assert "a.npy" in report["inputs"]


def test_torch_distributed_backend() -> None:
    """`--backend torch-distributed` on two local gloo ranks gives the exact integer product."""
    args = [*TINY, "--workers", "2", "--dtype", "int64", "--backend", "torch-distributed", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["correct"] is True
    assert report["backend"] == "torch-distributed"
    assert report["runs"][0]["scatter_ms"] is not None


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--workers", "0"], "--workers"),
        (["--sweep-workers", "1,x"], "comma-separated integers"),
        (["--workers", "2", "--sweep-workers", "1,2"], "either --workers or --sweep-workers"),
        (["--split", "diagonal"], "--split"),
        (["--device", "cuda"], "torch-distributed"),
    ],
)
def test_bad_options(args: list[str], fragment: str) -> None:
    """Impossible options: one line naming the problem, exit 2."""
    assert_one_line_error(runner.invoke(app, [*TINY, *args]), fragment)


def test_bad_files(tmp_path: Path) -> None:
    """Missing, unreadable and mismatched .npy files: one line each, exit 2, no segment left."""
    good = tmp_path / "good.npy"
    np.save(good, np.ones((4, 3)))
    other = tmp_path / "other.npy"
    np.save(other, np.ones((5, 2)))
    garbage = _write(tmp_path / "garbage.npy", b"this is not a numpy file")
    cube = tmp_path / "cube.npy"
    np.save(cube, np.ones((2, 2, 2)))
    cases = [
        ([good, tmp_path / "missing.npy"], "does not exist"),
        ([garbage, good], "cannot read A"),
        ([good, other], "A's columns (3) must equal B's rows (5)"),
        ([cube, good], "must be a 2-D matrix"),
    ]
    for (a, b), fragment in cases:
        assert_one_line_error(runner.invoke(app, ["matmul", "--a", str(a), "--b", str(b)]), fragment)
    assert_one_line_error(runner.invoke(app, ["matmul", "--a", str(good)]), "--a and --b go together")
    result = runner.invoke(app, ["matmul", "--a", str(good), "--b", str(good), "--size", "3"])
    assert_one_line_error(result, "drop them")
    assert no_segments_left()


def test_overflow_refused(tmp_path: Path) -> None:
    """int64 inputs whose product could overflow are refused, naming the bound."""
    np.save(tmp_path / "a.npy", np.full((3, 4), 2**31, dtype=np.int64))
    np.save(tmp_path / "b.npy", np.full((4, 3), 2**31, dtype=np.int64))
    result = runner.invoke(app, ["matmul", "--a", str(tmp_path / "a.npy"), "--b", str(tmp_path / "b.npy")])
    assert_one_line_error(result, "int64 product could overflow")
