"""Checkpoints: reading them safely, mapping foreign keys, inferring the config, verifying, exporting.

A checkpoint in the supplied format (docs/reference.md) is read as plain tensors
(``.safetensors``, or ``.pt``/``.pth`` through ``torch.load(weights_only=True)``, which refuses
anything that would run code), matched key by key against a readable mapping
(``keys_mapping.json``: foreign key -> toolkit parameter, through named transforms), and the
model's sizes are read off the shapes. The head count is in no shape: it is given (``n_heads``),
stored in a toolkit export, found by trying every divisor of d_model against reference examples,
or the default. Reference examples (``input_ids`` and the ``logits`` another implementation
computed for them) then prove that the loaded model reproduces them.

Examples files: ``.safetensors`` with tensors ``input_ids_<i>`` (int64 [S]) and ``logits_<i>``
(float [S, V]) for i = 0..n-1, or a ``.pt`` list of ``{"input_ids": LongTensor[S], "logits":
FloatTensor[S, V]}``. Toolkit exports are safetensors in the toolkit's own parameter names with
metadata ``{"toolkit_config": <ModelConfig as JSON>}``.

The package, one module per job: ``files`` (reading tensor files safely, the shipped files),
``mapping`` (the key-mapping language and matching a checkpoint to it), ``examples`` (reference
outputs), ``verify`` (comparing logits, the head-count search) and ``loader`` (the whole load, exports).
"""

from __future__ import annotations

from toolkit.weights.examples import EXAMPLES_METADATA, Example, check_examples, read_examples, write_examples
from toolkit.weights.files import (
    SHIPPED_DIR,
    SHIPPED_EXAMPLES,
    SHIPPED_WEIGHTS,
    TENSOR_SUFFIXES,
    read_tensors,
    shipped_files,
    shipped_folder,
)
from toolkit.weights.formats import FORMATS, Checkpoint, open_checkpoint
from toolkit.weights.loader import (
    EXPORT_METADATA_KEY,
    LoadReport,
    check_export_path,
    export_checkpoint,
    load_checkpoint,
    read_config,
)
from toolkit.weights.mapping import (
    BUILTIN_MAPPING,
    QKV_LAYOUTS,
    SIZE_SYMBOLS,
    TRANSFORMS,
    KeyMapping,
    KeyRule,
    MatchedCheckpoint,
    match_checkpoint,
    read_mapping,
    split_qkv,
    to_toolkit_state,
)
from toolkit.weights.verify import ExampleResult, HeadTrial, compare_examples, search_heads

__all__ = [
    "BUILTIN_MAPPING",
    "EXAMPLES_METADATA",
    "EXPORT_METADATA_KEY",
    "FORMATS",
    "QKV_LAYOUTS",
    "SHIPPED_DIR",
    "SHIPPED_EXAMPLES",
    "SHIPPED_WEIGHTS",
    "SIZE_SYMBOLS",
    "TENSOR_SUFFIXES",
    "TRANSFORMS",
    "Checkpoint",
    "Example",
    "ExampleResult",
    "HeadTrial",
    "KeyMapping",
    "KeyRule",
    "LoadReport",
    "MatchedCheckpoint",
    "check_examples",
    "check_export_path",
    "compare_examples",
    "export_checkpoint",
    "load_checkpoint",
    "match_checkpoint",
    "open_checkpoint",
    "read_config",
    "read_examples",
    "read_mapping",
    "read_tensors",
    "search_heads",
    "shipped_files",
    "shipped_folder",
    "split_qkv",
    "to_toolkit_state",
    "write_examples",
]
