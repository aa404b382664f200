"""Keeping ``toolkit --help`` light: what Typer's help renderer imports but a help never uses.

Typer's help renderer (``typer.rich_utils``) imports ``rich.markdown`` (and markdown-it with it)
for ``rich_markup_mode="markdown"``, which this CLI does not use, and ``rich.traceback`` (with
``rich.pretty``, ``rich.syntax`` and Pygments) for tracebacks of exceptions that the CLI turns into
one line anyway: together a third of the help's start-up. Until one of their classes is used, a
stand-in module holds each one's place; the first use imports the real module, and every later
import gets the real one.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}
"""The modules held back, each with the one class that ``typer.rich_utils`` imports from it."""


def defer(module_name: str, class_name: str) -> None:
    """Put a stand-in for ``module_name`` in place, unless the real module is already loaded.

    The stand-in's ``class_name`` builds (and forwards class attributes such as ``from_exception``
    to) the real class; any other attribute of the module loads the real module at once.
    """
    if module_name in sys.modules:
        return
    stand_in = types.ModuleType(module_name, "stand-in until first use (toolkit.cli.startup)")

    def real_module() -> types.ModuleType:
        if sys.modules.get(module_name) is stand_in:
            del sys.modules[module_name]
        return importlib.import_module(module_name)

    class Forwarding(type):
        def __getattr__(cls, name: str) -> Any:
            return getattr(getattr(real_module(), class_name), name)

        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, getattr(real_module(), class_name))

    class Deferred(metaclass=Forwarding):
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return getattr(real_module(), class_name)(*args, **kwargs)

    def module_attribute(name: str) -> Any:
        if name.startswith("__"):  # the import system asks for __path__, __spec__, ...: not a use
            raise AttributeError(name)
        return getattr(real_module(), name)

    Deferred.__name__ = Deferred.__qualname__ = class_name
    setattr(stand_in, class_name, Deferred)
    stand_in.__getattr__ = module_attribute  # type: ignore[method-assign]
    sys.modules[module_name] = stand_in


def defer_rich_markdown() -> None:
    """Hold back ``rich.markdown`` (kept for callers of the first version of this module)."""
    defer("rich.markdown", DEFERRED["rich.markdown"])


for _module, _class in DEFERRED.items():
    defer(_module, _class)
