"""The ``toolkit`` command line: one module per command, registered on one Typer app."""

from __future__ import annotations

# Each import registers its command on `app`.
from toolkit.cli import ablate as _ablate  # noqa: F401
from toolkit.cli import latency as _latency  # noqa: F401
from toolkit.cli import layernorm as _layernorm  # noqa: F401
from toolkit.cli import load_weights as _load_weights  # noqa: F401
from toolkit.cli import matmul as _matmul  # noqa: F401
from toolkit.cli import params as _params  # noqa: F401
from toolkit.cli import startup as _startup  # noqa: F401  (before any help is rendered)
from toolkit.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
