"""Typed exceptions, and how library text names the settings a user can change.

The CLI turns a :class:`ToolkitError` into one line on stderr and exit 2. Library messages speak of
quantities (``budget_s``, ``seq_len``), never of command-line flags: a message marks each one with
:func:`setting`, ``str(error)`` shows the quantity's name, and the CLI shows its flag instead
(``toolkit.cli.options.FLAGS``).
"""

from __future__ import annotations

from collections.abc import Mapping

_MARK = "\x1f"  # ASCII unit separator: never part of a user's text


def setting(name: str) -> str:
    """Mark ``name`` (a quantity the user sets, e.g. ``"budget_s"``) inside a message or note."""
    return f"{_MARK}{name}{_MARK}"


def name_settings(text: str, names: Mapping[str, str] | None = None) -> str:
    """``text`` with every :func:`setting` mark replaced by ``names[quantity]`` (default: the quantity)."""
    parts = text.split(_MARK)
    lookup = names or {}
    return "".join(lookup.get(part, part) if i % 2 else part for i, part in enumerate(parts))


class ToolkitError(Exception):
    """Bad input from the user: the message names the problem and what to do about it."""

    def __str__(self) -> str:
        return name_settings(super().__str__())

    def describe(self, names: Mapping[str, str]) -> str:
        """The message with each marked quantity named by ``names`` (the CLI: by its flag)."""
        return name_settings(super().__str__(), names)


class ConfigError(ToolkitError, ValueError):
    """A model configuration that cannot exist, or a config file that cannot be read."""


class InputError(ToolkitError, ValueError):
    """Model input that does not fit the configuration (too long, ids outside the vocabulary)."""


class DeviceError(ToolkitError, RuntimeError):
    """A device or dtype that is not available on this machine."""


class WeightsError(ToolkitError, ValueError):
    """A checkpoint, key mapping or examples file that cannot be read, or that do not fit together."""


class CheckpointKeysError(WeightsError):
    """A checkpoint whose keys do not match its mapping; every missing, unexpected and misshapen key."""

    def __init__(self, path: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = [
            f"{len(items)} {what}: {'; '.join(items)}"
            for what, items in (
                ("missing key(s)", missing),
                ("unexpected key(s)", unexpected),
                ("shape mismatch(es)", mismatched),
            )
            if items
        ]
        super().__init__(
            f"checkpoint {path} does not match its key mapping: {' | '.join(parts)}; "
            f"fix the checkpoint, or pass {setting('mapping')} with a mapping that describes it"
        )


class BackendError(ToolkitError, RuntimeError):
    """A kernel backend (numba, triton) that cannot run here: not installed, or the wrong device."""


class DataError(ToolkitError, ValueError):
    """A data file that cannot be used: missing, unreadable, or too small for the request."""


class SweepError(ToolkitError, ValueError):
    """A latency sweep that cannot run: an unknown parameter to vary, or values the model cannot take."""


class OutputError(ToolkitError, OSError):
    """An output file or directory that cannot be written (checked before the work starts)."""


class MatmulError(ToolkitError, RuntimeError):
    """A parallel matrix product that cannot run or did not finish: no room, a dead worker, a failed rank."""


class WorkerDiedError(MatmulError):
    """A worker process of the parallel matrix product died (killed, out of memory, crashed)."""


class InsufficientMemoryError(ToolkitError, MemoryError):
    """A model, or the pass asked of it, that needs more memory than the device has available."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation: Python's MemoryError, or PyTorch's CPU or CUDA allocator
    (``torch.OutOfMemoryError`` is a RuntimeError; the CPU allocator raises a plain RuntimeError)."""
    text = str(exc)
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    )
