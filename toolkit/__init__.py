"""toolkit: measured, verified answers to the questions people ask about small transformers."""

from toolkit.config import ModelConfig, load_config
from toolkit.errors import ToolkitError
from toolkit.model import Transformer

__version__ = "0.1.0"

__all__ = ["ModelConfig", "ToolkitError", "Transformer", "__version__", "load_config"]
