"""toolkit: measured, verified answers to the questions people ask about small transformers.

The public names are imported lazily, so that ``import toolkit`` (done by every worker process of
``toolkit matmul``) does not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ModelConfig", "ToolkitError", "Transformer", "__version__", "load_config"]

if TYPE_CHECKING:
    from toolkit.config import ModelConfig, load_config
    from toolkit.errors import ToolkitError
    from toolkit.model import Transformer

_HOMES = {
    "ModelConfig": "toolkit.config",
    "load_config": "toolkit.config",
    "ToolkitError": "toolkit.errors",
    "Transformer": "toolkit.model",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
