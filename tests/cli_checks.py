"""Checks shared by the CLI tests."""

from __future__ import annotations

from typing import Any


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
