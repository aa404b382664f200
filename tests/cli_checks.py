"""Checks shared by the CLI tests."""

from __future__ import annotations

from typing import Any

# The model flags of conftest.TINY (vocab 61, 32 positions, d 24, 3 heads, 2 layers, d_mlp 40).
TINY_FLAGS = [
    "--vocab",
    "61",
    "--max-seq-len",
    "32",
    "--d-model",
    "24",
    "--heads",
    "3",
    "--layers",
    "2",
    "--mlp",
    "40",
]


def assert_one_line_error(result: Any, fragment: str) -> None:
    """Exit 2, exactly one line on stderr containing ``fragment``, no traceback, nothing on stdout."""
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, repr(result.stderr)
    assert result.stderr.endswith("\n"), repr(result.stderr)
    line = result.stderr.rstrip("\n")
    assert line.startswith("toolkit: error: "), line
    assert fragment in line, line
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
