"""Output paths (--plot, --csv, --export, --plots-dir) are checked before any work; a write that
still fails is one line and exit 2 after the results were printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_checks import assert_one_line_error
from tiny import TINY_FLAGS
from typer.testing import CliRunner

import toolkit.plots.latency
import toolkit.studies.ablation
import toolkit.studies.latency
import toolkit.studies.layernorm
import toolkit.studies.matmul
from toolkit.cli import app

runner = CliRunner()
LATENCY = ["latency", *TINY_FLAGS, "--device", "cpu", "--budget", "0.05", "--values", "1,3"]


def _no_work(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the work started although an output path was bad")


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every study fails the test if it is reached: the path check must come first."""
    for module, name in (
        (toolkit.studies.latency, "measure_latency_sweep"),
        (toolkit.studies.latency, "measure_latency_all"),
        (toolkit.studies.ablation, "run_ablation"),
        (toolkit.studies.layernorm, "run_layernorm_study"),
        (toolkit.studies.matmul, "run_matmul"),
    ):
        monkeypatch.setattr(module, name, _no_work)


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.md"
    path.write_text("not a directory\n", encoding="utf-8")
    return path


CASES = {
    "plot is a directory": (lambda d: [*LATENCY, "--plot", str(d)], "is a directory"),
    "plot in a file": (lambda d: [*LATENCY, "--plot", str(_a_file(d) / "x.png")], "not a directory"),
    "plot format": (lambda d: [*LATENCY, "--plot", str(d / "x.txt")], "cannot write a .txt file"),
    "plot in /proc": (lambda d: [*LATENCY, "--plot", "/proc/x.png"], "cannot write into /proc"),
    "csv is a directory": (lambda d: [*LATENCY, "--csv", str(d)], "--csv"),
    "vary all, plot a file": (
        lambda d: [*LATENCY[:-2], "--vary", "all", "--plot", str(d / "x.png")],
        "--plot is the directory",
    ),
    "vary all, plot dir is a file": (
        lambda d: [*LATENCY[:-2], "--vary", "all", "--plot", str(_a_file(d))],
        "is a file, not a directory",
    ),
    "ablate plot format": (lambda d: ["ablate", "--no-latency", "--plot", str(d / "a.jpeg")], "--plot"),
    "layernorm plots dir": (
        lambda d: ["layernorm-compare", "--device", "cpu", "--plots-dir", str(_a_file(d))],
        "--plots-dir",
    ),
    "matmul plot": (
        lambda d: ["matmul", "--size", "32", "--sweep-workers", "1,2", "--plot", str(d)],
        "is a directory",
    ),
    "export in a file": (
        lambda d: ["load-weights", "--export", str(_a_file(d) / "m.safetensors")],
        "--export",
    ),
}


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize("case", list(CASES))
def test_bad_output_path_is_refused_before_the_work(case: str, tmp_path: Path) -> None:
    """One line naming the flag, exit 2, no study run and nothing created."""
    build, fragment = CASES[case]
    args = build(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, args)
    assert_one_line_error(result, fragment)
    assert sorted(tmp_path.rglob("*")) == before


def test_write_failing_after_the_work_keeps_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table is printed, then one error line and exit 2 (a disk that filled during the run)."""

    def full_disk(*args: Any, **kwargs: Any) -> Path:
        raise OSError(28, "No space left on device", str(tmp_path / "p.png"))

    monkeypatch.setattr(toolkit.plots.latency, "save_latency_plot", full_disk)
    result = runner.invoke(app, [*LATENCY, "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 2, result.output
    assert "median" in result.stdout  # the results came first
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("toolkit: error: could not write plot "), lines
    assert "No space left on device" in lines[-1]
    assert "Traceback" not in result.stderr

    as_json = runner.invoke(app, [*LATENCY, "--plot", str(tmp_path / "p.png"), "--json"])
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout)["plots"] == []  # only files that exist are listed
