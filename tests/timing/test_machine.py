"""The machine: the allocator settings and what child processes inherit."""

from __future__ import annotations

import os
import subprocess
import sys

from toolkit.timing import configure_allocator


def test_configure_allocator_is_idempotent() -> None:
    """The allocator is set once; later calls return the same description; children inherit it."""
    first = configure_allocator()
    assert configure_allocator() == first
    assert isinstance(first, str)
    assert first
    if first.startswith("glibc"):
        assert os.environ["MALLOC_MMAP_MAX_"] == "0"
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(2**31 - 1)
        # A child process started now inherits the settings through its environment.
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['MALLOC_MMAP_MAX_'])"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.strip() == "0"
