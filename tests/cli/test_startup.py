"""Start-up stays light: help for every command imports none of the numerical libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import get_args

from toolkit import config, device
from toolkit.cli import ablate, latency
from toolkit.cli import options as opt
from toolkit.studies.settings import SWEEP_CHOICES

COMMANDS = ("params", "latency", "load-weights", "ablate", "layernorm-compare", "matmul")
HEAVY = (
    "torch",
    "numpy",
    "pandas",
    "matplotlib",
    "numba",
    "transformers",
    "safetensors",
    "tokenizers",
    "triton",
    "markdown_it",  # Typer's help imports it for a markup mode this CLI does not use
    "pygments",  # and rich.traceback, with Pygments, for tracebacks the CLI never shows
)

PROBE = f"""
import json, sys
from typer.testing import CliRunner
from toolkit.cli import app
runner = CliRunner()
codes = [runner.invoke(app, ["--help"]).exit_code]
codes += [runner.invoke(app, [command, "--help"]).exit_code for command in {COMMANDS!r}]
codes += [runner.invoke(app, ["params", "--heads", "3"]).exit_code]  # a config that cannot exist
codes += [runner.invoke(app, ["latency", "--vary", "width"]).exit_code]  # an unknown choice
print(json.dumps({{"codes": codes, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_help_imports_no_numerical_library() -> None:
    """`toolkit --help`, `toolkit <command> --help` and argument errors load neither PyTorch nor NumPy
    nor their kin.

    Run in a fresh interpreter: this test process has imported all of them already.
    """
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * (1 + len(COMMANDS)) + [2, 2]
    assert report["heavy"] == []


def test_option_choices_match_the_library() -> None:
    """The CLI's Literal choices (kept torch-free) list exactly what the library accepts."""
    assert get_args(opt.DeviceName) == device.DEVICE_CHOICES
    assert get_args(opt.DtypeName) == tuple(device.DTYPES)
    assert get_args(latency.VaryName) == (*SWEEP_CHOICES, "all")
    assert get_args(ablate.GeluName) == config.GELU_VARIANTS
    assert get_args(ablate.NormName) == config.NORM_VARIANTS
    assert tuple(choice.value for choice in ablate.ResidualName) == config.RESIDUAL_VARIANTS


DEFERRED_USE = """
import io
import sys
import toolkit.cli
from rich.console import Console
from rich.markdown import Markdown
from rich.traceback import Traceback
held_back = "pygments" not in sys.modules and "markdown_it" not in sys.modules
try:
    1 / 0
except ZeroDivisionError as error:
    traceback = Traceback.from_exception(type(error), error, error.__traceback__)
console = Console(file=io.StringIO(), width=80, record=True)
console.print(traceback)
console.print(Markdown("# a *title*"))
import rich.traceback
print(held_back, isinstance(traceback, rich.traceback.Traceback), "pygments" in sys.modules)
print(console.export_text())
"""


def test_held_back_modules_work_when_used() -> None:
    """rich.markdown and rich.traceback, held back at start-up, load and work on first use."""
    result = subprocess.run([sys.executable, "-c", DEFERRED_USE], capture_output=True, text=True, check=True)
    first, *rest = result.stdout.splitlines()
    assert first == "True True True"
    text = "\n".join(rest)
    assert "ZeroDivisionError: division by zero" in text
    assert "a title" in text
