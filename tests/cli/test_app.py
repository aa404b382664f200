"""The command line through Typer's CliRunner: help, version, `params`, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import assert_one_line_error
from tiny import TINY_FLAGS
from typer.testing import CliRunner

from toolkit import __version__
from toolkit.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    """`toolkit --help` and a bare `toolkit` list the commands with one line each."""
    for args in (["--help"], []):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert "params" in result.stdout
        assert "Model size" in result.stdout
        for command in ("params", "latency", "load-weights", "ablate", "layernorm-compare", "matmul"):
            assert command in result.stdout, command


def test_version() -> None:
    """`toolkit --version` prints the package version."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"toolkit {__version__}"


def test_params_table() -> None:
    """`toolkit params` prints the component table, bytes, measured memory and the summary."""
    result = runner.invoke(app, ["params", *TINY_FLAGS, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for text in (
        "Parameters by component",
        "block 1 MLP",
        "shared with token embedding",
        "Weight bytes by dtype",
        "MiB",
        "Measured memory",
        "parameters ×",
    ):
        assert text in result.stdout


def test_params_json_default_config() -> None:
    """`--json` on the defaults reports 3,156,992 parameters and the measured memory figures."""
    result = runner.invoke(app, ["params", "--json", "--device", "cpu", "--seq-len", "64"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total_params"] == 3_156_992
    assert report["bytes_by_dtype"]["float32"] == 4 * 3_156_992
    assert report["by_component"]["LM head"] == 0
    assert report["memory"]["seq_len"] == 64
    assert {"build_bytes", "activation_bytes", "forward_peak_bytes"} <= set(report["memory"])


def test_params_reads_config_file(tmp_path: Path) -> None:
    """--config sets the model; flags override the file."""
    path = tmp_path / "model.toml"
    path.write_text(
        "vocab_size = 100\nd_model = 32\nn_heads = 4\nn_layers = 1\nd_mlp = 64\nmax_seq_len = 16\n"
    )
    result = runner.invoke(app, ["params", "--config", str(path), "--layers", "2", "--json", "--no-measure"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"]["n_layers"] == 2
    assert report["config"]["vocab_size"] == 100
    assert report["memory"] is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--device", "gpu"], "'gpu' is not one of 'auto', 'cpu', 'cuda'"),
        (["--dtype", "float8"], "--dtype"),
        (["--heads", "3"], "not divisible by n_heads=3"),
        (["--eps", "0"], "norm_eps must be a positive number"),
        (["--layers", "0"], "n_layers must be at least 1"),
        (["--heads", "x"], "--heads"),
        (["--bogus"], "No such option"),
        (["--config", "/nonexistent/model.json"], "does not exist"),
        (["--seq-len", "2048"], "exceeds max_seq_len=1024"),
    ],
)
def test_params_bad_input(args: list[str], fragment: str) -> None:
    """Bad options and impossible configs: one line on stderr, exit 2, no traceback."""
    assert_one_line_error(runner.invoke(app, ["params", *args]), fragment)


def test_malformed_config_file(tmp_path: Path) -> None:
    """A malformed --config file is one line, exit 2."""
    path = tmp_path / "bad.json"
    path.write_text('{"d_model": ')
    assert_one_line_error(runner.invoke(app, ["params", "--config", str(path)]), "not valid JSON")


def test_cuda_without_gpu_is_refused() -> None:
    """--device cuda on a machine without a GPU is a clear error, not a crash."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible; the refusal cannot be shown here")
    assert_one_line_error(runner.invoke(app, ["params", "--device", "cuda"]), "no CUDA GPU is visible")


def test_python_dash_m_and_console_script() -> None:
    """`python -m toolkit` runs the same app, with one-line errors in a real process."""
    ok = subprocess.run(
        [sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0
    assert "params" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "toolkit", "params", "--heads", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


def _tiny_export(tmp_path: Path) -> Path:
    from conftest import TINY

    from toolkit import Transformer
    from toolkit.weights import export_checkpoint

    return export_checkpoint(Transformer(TINY), tmp_path / "tiny.safetensors")


def test_params_takes_config_from_weights(tmp_path: Path) -> None:
    """--weights sets the model's config from a checkpoint: a toolkit export keeps its own head count."""
    result = runner.invoke(
        app, ["params", "--weights", str(_tiny_export(tmp_path)), "--no-measure", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"]["n_heads"] == 3
    d, m, v, s = 24, 40, 61, 32
    assert (
        report["total_params"] == v * d + s * d + 2 * (4 * d * d + 4 * d + 2 * d * m + m + d + 4 * d) + 2 * d
    )


def test_params_shipped_weights() -> None:
    """The shipped supplied-format checkpoint gives the reference model's 3,156,992 parameters."""
    shipped = Path(__file__).resolve().parents[2] / "weights" / "reference_model.safetensors"
    result = runner.invoke(app, ["params", "--weights", str(shipped), "--no-measure", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_params"] == 3_156_992


def test_latency_takes_config_from_weights(tmp_path: Path) -> None:
    """`latency --weights` sweeps around the checkpoint's config."""
    args = ["latency", "--weights", str(_tiny_export(tmp_path)), "--vary", "layers", "--values", "1,2"]
    result = runner.invoke(app, [*args, "--budget", "0.5", "--no-plot", "--json"])
    assert result.exit_code == 0, result.output
    assert '"d_model": 24' in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--vocab", "7"], "--vocab cannot be combined with --weights"),
        (["--heads", "5"], "not divisible"),
    ],
)
def test_weights_conflicts_are_refused(tmp_path: Path, args: list[str], fragment: str) -> None:
    """Size flags that contradict the checkpoint, or an impossible head count: one line, exit 2."""
    weights = str(_tiny_export(tmp_path))
    assert_one_line_error(runner.invoke(app, ["params", "--weights", weights, *args]), fragment)


def test_missing_weights_file() -> None:
    """A --weights path that does not exist: one line, exit 2."""
    assert_one_line_error(runner.invoke(app, ["params", "--weights", "/nope.safetensors"]), "does not exist")


def test_help_reads_cleanly() -> None:
    """Help lists the commands in the README's order and shows no type for flags."""
    listing = runner.invoke(app, ["--help"]).stdout
    order = ("params", "load-weights", "latency", "ablate", "layernorm-compare", "matmul")
    rows = [
        line.split()[1] for line in listing.splitlines() if line.startswith("│ ") and line.split()[1] in order
    ]
    assert tuple(rows) == order
    for command in order:
        text = runner.invoke(app, [command, "--help"]).stdout
        assert "<bool>" not in text, command
        assert "--help" in text
