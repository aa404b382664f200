"""The whole load: checkpoint -> model + report (the supplied format through a mapping, or a toolkit
export), and writing exports.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from toolkit.config import ModelConfig, from_dict
from toolkit.errors import CheckpointKeysError, ConfigError, WeightsError, setting
from toolkit.files import atomic_path, check_output_file
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback
from toolkit.weights.examples import check_examples, read_examples
from toolkit.weights.families import family_state
from toolkit.weights.files import refuse_non_float, state_problems
from toolkit.weights.formats import EXPORT_METADATA_KEY, Checkpoint, open_checkpoint
from toolkit.weights.mapping import (
    SIZE_SYMBOLS,
    KeyMapping,
    builtin_mapping,
    match_checkpoint,
    read_mapping,
    to_toolkit_state,
)
from toolkit.weights.pages import convert_state
from toolkit.weights.verify import (
    ExampleResult,
    HeadTrial,
    SearchResult,
    compare_examples,
    max_diff,
    search_hypotheses,
)

__all__ = ["EXPORT_METADATA_KEY", "LoadReport", "check_export_path", "export_checkpoint", "load_checkpoint"]


class _NoInit(TorchFunctionMode):
    """Skips the in-place random and constant fills of parameter initialisation: a model whose
    every tensor is replaced by a checkpoint's need not draw 100 M random numbers first. (The
    meta device would skip them too, but its first random fill in a process costs seconds.)"""

    FILLS = frozenset({"normal_", "uniform_", "zero_", "fill_"})  # in-place fills of a tensor

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # every torch.nn.init function (kaiming_uniform_, normal_, ...), caught before it runs
        if getattr(func, "__module__", "") == "torch.nn.init" or getattr(func, "__name__", "") in self.FILLS:
            target = args[0] if args else (kwargs or {}).get("tensor")
            if isinstance(target, torch.Tensor):
                return target
        return func(*args, **(kwargs or {}))


def _skeleton(config: ModelConfig) -> Transformer:
    """A model of ``config`` with uninitialised tensors (untouched memory), to be given a state."""
    with _NoInit():
        return Transformer(config)


def _parameter_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in _skeleton(config).state_dict().items()}


def build_model(config: ModelConfig, state: dict[str, torch.Tensor], device: torch.device) -> Transformer:
    """A model of ``config`` holding exactly the tensors of ``state``, not copies (views of the file
    where the layout allows: a safetensors file stays memory-mapped, read when the model first runs;
    models built from one state share its memory), in eval mode on ``device``."""
    model = _skeleton(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


@dataclass(frozen=True)
class LoadReport:
    """What was loaded, from where, the config read off it, and how well it reproduces the examples."""

    weights_path: str
    examples_path: str | None
    mapping: str  # the mapping's file, BUILTIN_MAPPING, or "none (toolkit export)"
    checkpoint_format: str  # "hf-gpt2", "nanogpt", "supplied" (through a key mapping) or "toolkit"
    config: ModelConfig
    config_sources: dict[str, str]  # field -> where its value came from
    n_heads_source: (
        str  # "flag", "config" (config.json, model_args), "checkpoint" (an export's), "search", "default"
    )
    head_trials: tuple[HeadTrial, ...]
    results: tuple[ExampleResult, ...]
    atol: float
    device: str
    n_params: int
    search: SearchResult | None = None  # the hypothesis search, when the checkpoint records no config
    dtype: str = "float32"  # the model's, whatever the checkpoint stored

    @property
    def verified(self) -> bool:
        """Whether any example was compared (without examples only keys and shapes are checked)."""
        return bool(self.results)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def max_abs_diff(self) -> float:
        return max_diff(self.results)

    @property
    def heads_matching(self) -> list[int]:
        return [t.n_heads for t in self.head_trials if t.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verified": self.verified,
            "max_abs_diff": self.max_abs_diff,
            "atol": self.atol,
            "config": self.config.to_dict(),
            "config_sources": dict(self.config_sources),
            "n_heads_source": self.n_heads_source,
            "head_trials": [t.to_dict() for t in self.head_trials],
            "search": self.search.to_dict() if self.search is not None else None,
            "examples": [r.to_dict() for r in self.results],
            "weights_path": self.weights_path,
            "examples_path": self.examples_path,
            "mapping": self.mapping,
            "checkpoint_format": self.checkpoint_format,
            "format": self.checkpoint_format,
            "n_params": self.n_params,
            "device": self.device,
            "dtype": self.dtype,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per example."""
        columns = ["index", "seq_len", "max_abs_diff", "rmse", "passed"]
        return pd.DataFrame([r.to_dict() for r in self.results], columns=columns)


@dataclass(frozen=True)
class _Readable:
    """A checkpoint ready to become models: its sizes, and its state for any head count."""

    base: ModelConfig  # sizes (and, for an export, every other field); n_heads to be decided
    state_of: Callable[[int], dict[str, torch.Tensor]]  # head count -> toolkit state dict
    sources: dict[str, str]
    mapping: str
    checkpoint_format: str
    saved_heads: int | None  # a toolkit export's own head count


def _read_export(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path, dtype: torch.dtype
) -> _Readable:
    saved = _export_config(metadata, path)
    missing, unexpected, mismatched = state_problems(_parameter_shapes(saved), tensors)
    if missing or unexpected or mismatched:
        raise CheckpointKeysError(str(path), missing, unexpected, mismatched)
    refuse_non_float(tensors, path)
    state = convert_state(tensors, dtype)
    sources = {name: "config stored in the export" for name in (*SIZE_SYMBOLS, "n_layers")}
    return _Readable(saved, lambda heads: state, sources, "none (toolkit export)", "toolkit", saved.n_heads)


_SIZE_NAMES = ("vocab_size", "max_seq_len", "d_model", "d_mlp", "n_layers")
"""The sizes a mapping reads off the tensors; a recorded config must agree with them."""


def _read_mapped(checkpoint: Checkpoint, mapping: KeyMapping, dtype: torch.dtype) -> _Readable:
    """A checkpoint read through a key mapping; a config it records must agree with its tensors."""
    path = checkpoint.path
    matched = match_checkpoint(checkpoint.tensors, mapping, str(path))
    sizes = matched.sizes
    stated = checkpoint.config
    disagree = [
        f"{name}={stated[name]} but the tensors have {sizes[name]}"
        for name in _SIZE_NAMES
        if name in stated and stated[name] != sizes[name]
    ]
    if disagree:
        raise WeightsError(
            f"{path}: its {checkpoint.config_source} does not match its tensors: {'; '.join(disagree)}; the "
            "checkpoint is inconsistent"
        )
    base = ModelConfig(
        vocab_size=sizes["vocab_size"],
        max_seq_len=sizes["max_seq_len"],
        d_model=sizes["d_model"],
        n_heads=1,
        n_layers=sizes["n_layers"],
        d_mlp=sizes["d_mlp"],
    )
    if stated:  # the head count, eps, GELU form: d_model % n_heads is checked here
        base = base.replace(**{k: v for k, v in stated.items() if k not in _SIZE_NAMES and k != "n_heads"})
        base.replace(n_heads=stated["n_heads"])  # raises ConfigError when n_head does not divide n_embd
    problems = state_problems(_parameter_shapes(base), to_toolkit_state(matched, 1))
    if any(problems):
        named = zip(("unset", "unknown targets", "wrong shape after transforms"), problems, strict=True)
        raise WeightsError(
            f"mapping {mapping.origin} does not fill the toolkit model: "
            + " | ".join(f"{what}: {'; '.join(items)}" for what, items in named if items)
            + "; fix the mapping's 'to' names or transforms"
        )
    sources = dict(matched.sources)
    for name in stated:
        key = checkpoint.config_keys.get(name, name)
        sources.setdefault(name, f"{checkpoint.config_source}: {key}")  # sizes keep their tensor
    return _Readable(
        base,
        lambda heads: to_toolkit_state(matched, heads, dtype),
        sources,
        mapping.origin,
        checkpoint.checkpoint_format,
        stated.get("n_heads"),
    )


def load_checkpoint(
    weights: str | Path,
    *,
    examples: str | Path | None = None,
    mapping: str | Path | None = None,
    n_heads: int | None = None,
    atol: float = 1e-4,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
    checkpoint_format: str = "auto",
    dtype: torch.dtype = torch.float32,
) -> tuple[Transformer, LoadReport]:
    """Load a checkpoint (supplied format through ``mapping``, or a toolkit export) and verify it.

    ``n_heads``: the head count; when None it is a toolkit export's own, else found by searching the
    divisors of d_model against ``examples``, else the default (2). Returns the model (eval mode, on
    ``device``, in ``dtype``: weights stored in another precision, such as the Hub's bfloat16, are
    converted; stored in it, they stay views of the file) and the report. Raises
    :class:`WeightsError` (or :class:`ConfigError`) for input that cannot be loaded; a model that
    loads but does not reproduce the examples is reported
    (``report.passed`` is False), not raised.
    """
    torch_device = torch.device(device)
    weights_path = Path(weights)
    readable = read_checkpoint(weights_path, checkpoint_format, mapping, dtype)
    base = readable.base
    example_list = read_examples(examples) if examples is not None else []
    check_examples(example_list, base, str(examples))

    states: dict[int, dict[str, torch.Tensor]] = {}

    def build(heads: int, gelu: str = base.gelu, eps: float = base.norm_eps) -> Transformer:
        if heads not in states:  # the q|k|v split may depend on the head count, nothing else does
            states[heads] = readable.state_of(heads)
        state = states[heads]
        return build_model(base.replace(n_heads=heads, gelu=gelu, norm_eps=eps), state, torch_device)

    trials: list[HeadTrial] = []
    results: list[ExampleResult] = []
    search: SearchResult | None = None
    sources = dict(readable.sources)
    _check_heads_flag(readable, n_heads)
    if readable.saved_heads is None and example_list:  # no config recorded: prove what no shape shows
        search = search_hypotheses(
            build, base.d_model, example_list, atol, None if n_heads is None else [n_heads], progress
        )
        chosen = search.chosen
        heads, trials, results = chosen.n_heads, search.head_trials(), list(search.results)
        heads_source = "flag" if n_heads is not None else "search"
        sources |= {"gelu": "search", "norm_eps": "search"}
        model = build(chosen.n_heads, chosen.gelu, chosen.norm_eps)
    else:
        if n_heads is not None:
            heads, heads_source = n_heads, "flag"
        elif readable.saved_heads is not None:
            heads = readable.saved_heads
            heads_source = "checkpoint" if readable.checkpoint_format == "toolkit" else "config"
        elif base.d_model % ModelConfig.n_heads == 0:
            heads, heads_source = ModelConfig.n_heads, "default"
        else:
            raise WeightsError(
                f"d_model={base.d_model} is not divisible by the default {ModelConfig.n_heads} heads, and "
                f"the head count is in no shape; pass {setting('n_heads')} N, or {setting('examples')} to "
                "search for it"
            )
        model = build(heads)  # a head count that does not divide d_model raises ConfigError here
        results = compare_examples(model, example_list, atol, progress=progress)
    report = LoadReport(
        weights_path=str(weights_path),
        examples_path=None if examples is None else str(examples),
        mapping=readable.mapping,
        checkpoint_format=readable.checkpoint_format,
        config=model.config,
        config_sources={
            **sources,
            "n_heads": sources["n_heads"] if heads_source == "config" else heads_source,
        },
        n_heads_source=heads_source,
        head_trials=tuple(trials),
        results=tuple(results),
        atol=atol,
        device=str(torch_device),
        n_params=sum(p.numel() for p in model.parameters()),
        search=search,
        dtype=str(dtype).removeprefix("torch."),
    )
    return model, report


def read_checkpoint(
    weights: str | Path,
    checkpoint_format: str = "auto",
    mapping: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> _Readable:
    """A checkpoint of any format, read and checked against its mapping, no model built."""
    checkpoint = open_checkpoint(weights, checkpoint_format)
    if checkpoint.checkpoint_format == "toolkit":
        if mapping is not None:
            raise WeightsError(
                f"{checkpoint.path} is a toolkit export, in the toolkit's own names; "
                f"drop {setting('mapping')}"
            )
        return _read_export(checkpoint.tensors, checkpoint.metadata, checkpoint.path, dtype)
    if checkpoint.checkpoint_format == "hf":
        if mapping is not None:
            raise WeightsError(
                f"{checkpoint.path} is a Hugging Face {checkpoint.model_type} directory, whose key names the "
                f"toolkit knows; drop {setting('mapping')}"
            )
        return _read_family(checkpoint, dtype)
    key_mapping = (
        read_mapping(mapping) if mapping is not None else builtin_mapping(checkpoint.checkpoint_format)
    )
    return _read_mapped(checkpoint, key_mapping, dtype)


def _read_family(checkpoint: Checkpoint, dtype: torch.dtype) -> _Readable:
    """A model family's Hugging Face directory: its config.json is the whole config."""
    try:
        config = from_dict(checkpoint.config)
    except ConfigError as exc:
        raise WeightsError(
            f"{checkpoint.path}/config.json describes no model the toolkit can build: {exc}"
        ) from None

    @functools.cache
    def state() -> dict[str, torch.Tensor]:  # read when first needed (not by read_config)
        expected, path = _parameter_shapes(config), str(checkpoint.path)
        return family_state(checkpoint.tensors, checkpoint.model_type, config, expected, path, dtype)

    sources = {name: f"config.json: {key}" for name, key in checkpoint.config_keys.items()}
    origin = f"built-in (hf {checkpoint.model_type})"
    return _Readable(config, lambda _heads: state(), sources, origin, "hf", config.n_heads)


def _check_heads_flag(readable: _Readable, n_heads: int | None) -> None:
    """A given head count must fit d_model, and agree with the checkpoint's config where it has one."""
    if n_heads is None:
        return
    readable.base.replace(n_heads=n_heads)  # ConfigError: not a divisor of d_model
    if readable.saved_heads not in (None, n_heads):
        raise WeightsError(
            f"{setting('n_heads')} {n_heads} contradicts the checkpoint's own config "
            f"(n_heads={readable.saved_heads}, from {readable.sources.get('n_heads', 'its config')}); "
            f"drop {setting('n_heads')}"
        )


def read_config(
    weights: str | Path, checkpoint_format: str = "auto", n_heads: int | None = None
) -> ModelConfig:
    """The model config of a checkpoint, without building a model: its own config where it records
    one, sizes from its shapes, and the head count from ``n_heads``, the checkpoint, or the default."""
    readable = read_checkpoint(weights, checkpoint_format)
    _check_heads_flag(readable, n_heads)
    heads = n_heads or readable.saved_heads or ModelConfig.n_heads
    return readable.base.replace(n_heads=heads)


def _export_config(metadata: dict[str, str], path: Path) -> ModelConfig:
    try:
        return from_dict(json.loads(metadata[EXPORT_METADATA_KEY]))
    except (json.JSONDecodeError, TypeError, ConfigError) as exc:
        raise WeightsError(f"toolkit export {path} carries no valid config in its metadata: {exc}") from None


def check_export_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"export path {path} must end in .safetensors (exports are safetensors files)")
    if path.is_dir():
        raise WeightsError(f"export path {path} is a directory; give a file name ending in .safetensors")
    return check_output_file(path, "export")  # a place where the file can be created


def export_checkpoint(model: Transformer, path: str | Path) -> Path:
    """Write ``model`` in the toolkit's own names as safetensors, its config in the metadata."""
    path = check_export_path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {EXPORT_METADATA_KEY: json.dumps(model.config.to_dict())}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path
