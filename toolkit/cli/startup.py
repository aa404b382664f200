"""Keeping ``toolkit --help`` light: what the help renderer would import but never use.

Typer's help renderer (``typer.rich_utils``) imports ``rich.markdown``, and markdown-it with it (a
third of the help's start-up), for ``rich_markup_mode="markdown"``, which this CLI does not use.
Until something builds a ``Markdown``, a stand-in module holds its place; the first one built
imports the real module, and every later import gets the real one.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def defer_rich_markdown() -> None:
    """Put the stand-in for ``rich.markdown`` in place, unless the real module is already loaded."""
    if "rich.markdown" in sys.modules:
        return
    stand_in = types.ModuleType("rich.markdown", "stand-in until first use (toolkit.cli.startup)")

    class Markdown:
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            if sys.modules.get("rich.markdown") is stand_in:
                del sys.modules["rich.markdown"]
            return importlib.import_module("rich.markdown").Markdown(*args, **kwargs)

    stand_in.Markdown = Markdown  # type: ignore[attr-defined]
    sys.modules["rich.markdown"] = stand_in


defer_rich_markdown()
