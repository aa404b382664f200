"""Typed exceptions. The CLI turns a :class:`ToolkitError` into one line on stderr and exit 2."""

from __future__ import annotations


class ToolkitError(Exception):
    """Bad input from the user: the message names the problem and what to do about it."""


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
            "fix the checkpoint, or pass --mapping with a mapping that describes it"
        )


class BackendError(ToolkitError, RuntimeError):
    """A kernel backend (numba, triton) that cannot run here: not installed, or the wrong device."""


class DataError(ToolkitError, ValueError):
    """A data file that cannot be used: missing, unreadable, or too small for the request."""


class SweepError(ToolkitError, ValueError):
    """A latency sweep that cannot run: an unknown parameter to vary, or values the model cannot take."""


class MatmulError(ToolkitError, RuntimeError):
    """A parallel matrix product that cannot run or did not finish: no room, a dead worker, a failed rank."""


class WorkerDiedError(MatmulError):
    """A worker process of the parallel matrix product died (killed, out of memory, crashed)."""
