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
