"""Reference examples: input ids and the logits another implementation computed for them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from toolkit.config import ModelConfig
from toolkit.errors import WeightsError
from toolkit.files import atomic_path
from toolkit.weights.files import read_tensors, shape_text

EXAMPLES_METADATA = {"format": "toolkit-examples"}


@dataclass(frozen=True)
class Example:
    """Input ids [S] and the logits [S, V] another implementation computed for them."""

    input_ids: torch.Tensor
    logits: torch.Tensor

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[0])


def read_examples(path: str | Path) -> list[Example]:
    """Examples from ``.safetensors`` (``input_ids_<i>``, ``logits_<i>``) or a ``.pt`` list of dicts."""
    path = Path(path)
    content, _ = read_tensors(path, what="examples")
    if path.suffix.lower() == ".safetensors":
        count = _example_count(content, path)
        raw: list[Any] = [
            {"input_ids": content[f"input_ids_{i}"], "logits": content[f"logits_{i}"]} for i in range(count)
        ]
    elif isinstance(content, list | tuple) and content:
        raw = list(content)
    else:
        raise WeightsError(
            f"examples file {path} must hold a non-empty list of {{'input_ids', 'logits'}} dicts"
        )
    return [_example(item, i, path) for i, item in enumerate(raw)]


_KEY = re.compile(r"(input_ids|logits)_(\d+)")


def _example_count(content: dict[str, Any], path: Path) -> int:
    """How many examples a safetensors examples file holds, or which keys it lacks or should not have."""
    indices = {int(m.group(2)) for key in content if (m := _KEY.fullmatch(key))}
    others = sorted(key for key in content if not _KEY.fullmatch(key))
    if not indices:
        keys = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
        raise WeightsError(
            f"examples file {path} holds no input_ids_<i> / logits_<i> tensors (its keys: {keys or 'none'}); "
            "is it a checkpoint? pass the reference examples"
        )
    count = max(indices) + 1
    pairs = [f"{name}_{i}" for i in range(count) for name in ("input_ids", "logits")]
    missing = [key for key in pairs if key not in content]
    problems = [
        f"{what} {', '.join(keys[:6])}"
        for what, keys in (("missing", missing), ("unexpected", others))
        if keys
    ]
    if problems:
        raise WeightsError(
            f"examples file {path}: {'; '.join(problems)}; each example i = 0..{count - 1} needs both "
            "input_ids_<i> and logits_<i>, and nothing else"
        )
    return count


def _example(item: Any, index: int, path: Path) -> Example:
    where = f"examples file {path}, example {index}"
    if not isinstance(item, dict) or not {"input_ids", "logits"} <= set(item):
        raise WeightsError(f"{where}: each example must be a dict with 'input_ids' and 'logits'")
    ids, logits = item["input_ids"], item["logits"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
        raise WeightsError(f"{where}: input_ids must be an integer tensor of shape [S]")
    if ids.numel() == 0:
        raise WeightsError(f"{where}: input_ids is empty; give at least one token")
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        raise WeightsError(f"{where}: logits must be a floating-point tensor of shape [S, V]")
    if logits.shape[0] != ids.shape[0]:
        raise WeightsError(
            f"{where}: logits {shape_text(logits)} do not match input_ids of length {ids.shape[0]}"
        )
    return Example(ids.to(torch.int64), logits)


def check_examples(examples: Sequence[Example], config: ModelConfig, path: str) -> None:
    """Raise :class:`WeightsError` for examples the model cannot run or compare (vocab, length, ids)."""
    for i, example in enumerate(examples):
        where = f"examples file {path}, example {i}"
        vocab = example.logits.shape[1]
        if vocab != config.vocab_size:
            raise WeightsError(
                f"{where}: logits have vocabulary {vocab} but the checkpoint's is {config.vocab_size}; "
                "these examples belong to another model"
            )
        if example.seq_len > config.max_seq_len:
            raise WeightsError(
                f"{where}: length {example.seq_len} exceeds the checkpoint's max_seq_len={config.max_seq_len}"
            )
        low, high = int(example.input_ids.min()), int(example.input_ids.max())
        if low < 0 or high >= config.vocab_size:
            raise WeightsError(f"{where}: token ids {low}..{high} lie outside [0, {config.vocab_size - 1}]")


def write_examples(examples: Sequence[Example], path: str | Path) -> None:
    """Write examples as safetensors (``input_ids_<i>`` int64 [S], ``logits_<i>`` [S, V])."""
    tensors: dict[str, torch.Tensor] = {}
    for i, example in enumerate(examples):
        tensors[f"input_ids_{i}"] = example.input_ids.to(torch.int64).contiguous()
        tensors[f"logits_{i}"] = example.logits.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=EXAMPLES_METADATA)
