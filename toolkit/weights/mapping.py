"""The mapping language: foreign checkpoint key -> toolkit parameter, through named transforms
(rename, transpose, bias, split_qkv, tied), and matching a checkpoint's keys and shapes against it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import CheckpointKeysError, WeightsError, setting
from toolkit.files import check_input_file
from toolkit.weights.files import fmt_shape, refuse_non_float, shape_text
from toolkit.weights.pages import converted, file_backed_ranges

SIZE_SYMBOLS = ("vocab_size", "max_seq_len", "d_model", "d_mlp")
TRANSFORMS = ("rename", "transpose", "bias", "split_qkv", "tied")
QKV_LAYOUTS = ("qkv-major", "head-major")
BUILTIN_MAPPING = "built-in (supplied format)"


@dataclass(frozen=True)
class KeyRule:
    """One foreign key ('{i}' = block index) -> one toolkit parameter, through ``transforms``."""

    source: str
    target: str | None  # None for "tied": checked against ``same_as``, not loaded
    shape: tuple[str, ...]  # stored shape in size symbols: "d_model", "3*d_model", "1"
    transforms: tuple[str, ...]
    qkv_layout: str = "qkv-major"
    same_as: str | None = None
    optional: bool = False  # a tied rule whose key may be absent (save_pretrained drops tied tensors)

    @property
    def per_block(self) -> bool:
        return "{i}" in self.source

    def key(self, block: int | None) -> str:
        return self.source.replace("{i}", str(block))

    def target_key(self, block: int | None) -> str:
        assert self.target is not None
        return self.target.replace("{i}", str(block))

    def pattern(self) -> re.Pattern[str]:
        return _pattern(self.source)


@dataclass(frozen=True)
class KeyMapping:
    name: str
    origin: str  # the file it was read from, or BUILTIN_MAPPING
    rules: tuple[KeyRule, ...]
    ignore: tuple[str, ...] = ()  # keys ('{i}' = block index) that are not weights: causal-mask buffers

    def ignored(self, key: str) -> bool:
        return any(_pattern(raw).match(key) for raw in self.ignore)


def _pattern(source: str) -> re.Pattern[str]:
    return re.compile(re.escape(source).replace(re.escape("{i}"), r"(\d+)") + "$")


FORMAT_MAPPINGS = {
    "supplied": "keys_mapping.json",
    "hf-gpt2": "mappings/hf_gpt2.json",
    "nanogpt": "mappings/nanogpt.json",
}
"""The shipped mapping of each foreign format (files under toolkit/data/)."""


def builtin_mapping(checkpoint_format: str) -> KeyMapping:
    """The shipped key mapping of ``checkpoint_format`` ("supplied", "hf-gpt2", "nanogpt")."""
    name = FORMAT_MAPPINGS[checkpoint_format]
    text = resources.files("toolkit").joinpath(f"data/{name}").read_text(encoding="utf-8")
    origin = BUILTIN_MAPPING if checkpoint_format == "supplied" else f"built-in ({checkpoint_format}: {name})"
    return _parse_mapping(text, origin)


def read_mapping(path: str | Path | None = None) -> KeyMapping:
    """The key mapping in ``path``, or the built-in mapping of the supplied format (docs/reference.md)."""
    if path is None:
        return builtin_mapping("supplied")
    path = check_input_file(
        path, "mapping file", f"pass {setting('mapping')} PATH to a JSON key mapping", WeightsError
    )
    return _parse_mapping(path.read_text(encoding="utf-8"), str(path))


def _parse_mapping(text: str, origin: str) -> KeyMapping:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"mapping {origin} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise WeightsError(f"mapping {origin} must be a JSON object with a non-empty list 'rules'")
    rules = tuple(_read_rule(raw, origin) for raw in data["rules"])
    if not any(rule.per_block for rule in rules):
        raise WeightsError(
            f"mapping {origin} has no per-block rule ('{{i}}' in 'from'); blocks cannot be found"
        )
    ignore = data.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(key, str) for key in ignore):
        raise WeightsError(f"mapping {origin}: 'ignore' must be a list of keys ('{{i}}' = block index)")
    return KeyMapping(str(data.get("name", origin)), origin, rules, tuple(ignore))


def _read_rule(raw: Any, origin: str) -> KeyRule:
    where = f"mapping {origin}, rule {raw!r}"
    if not isinstance(raw, dict) or not isinstance(raw.get("from"), str):
        raise WeightsError(f"{where}: each rule needs 'from' (the checkpoint key)")
    transforms = tuple(t.strip() for t in str(raw.get("transform", "rename")).split(","))
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise WeightsError(
            f"{where}: unknown transform {unknown[0]!r}; valid transforms: {', '.join(TRANSFORMS)}"
        )
    target, same_as = raw.get("to"), raw.get("same_as")
    if "tied" in transforms and not isinstance(same_as, str):
        raise WeightsError(f"{where}: a 'tied' rule needs 'same_as' (the key it must equal)")
    if "tied" not in transforms and not isinstance(target, str):
        raise WeightsError(f"{where}: 'to' must name a toolkit parameter (e.g. blocks.{{i}}.mlp.up.weight)")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not shape:
        raise WeightsError(f'{where}: \'shape\' must list the stored dimensions, e.g. ["d_model", "d_mlp"]')
    for dim in shape:
        _parse_dim(str(dim), where)
    if "transpose" in transforms and len(shape) != 2:
        raise WeightsError(f"{where}: 'transpose' needs a 2-D shape, got {len(shape)} dimension(s)")
    layout = raw.get("qkv_layout", "qkv-major")
    if layout not in QKV_LAYOUTS:
        raise WeightsError(f"{where}: unknown qkv_layout {layout!r}; valid layouts: {', '.join(QKV_LAYOUTS)}")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool) or (optional and "tied" not in transforms):
        raise WeightsError(f"{where}: 'optional' is true or false, and only a 'tied' rule may be optional")
    return KeyRule(raw["from"], target, tuple(str(d) for d in shape), transforms, layout, same_as, optional)


def _parse_dim(dim: str, where: str = "mapping") -> tuple[int, str | None]:
    """'d_model' -> (1, 'd_model'); '3*d_model' -> (3, 'd_model'); '1' -> (1, None)."""
    factor, _, symbol = dim.rpartition("*")
    if not factor and symbol.isdigit():
        return int(symbol), None
    if symbol in SIZE_SYMBOLS and (not factor or factor.isdigit()):
        return int(factor or 1), symbol
    raise WeightsError(
        f"{where}: shape entry {dim!r} is not a size; use an integer, one of {', '.join(SIZE_SYMBOLS)}, "
        "or k*size such as 3*d_model"
    )


def _expected_shape(rule: KeyRule, sizes: dict[str, int]) -> list[int | str]:
    """The rule's stored shape with the known sizes filled in (unknown ones stay symbols)."""
    dims: list[int | str] = []
    for dim in rule.shape:
        factor, symbol = _parse_dim(dim)
        if symbol is None:
            dims.append(factor)
        else:
            dims.append(factor * sizes[symbol] if symbol in sizes else dim)
    return dims


# --------------------------------------------------------------------------------------------------
# Matching a checkpoint to its mapping, and reading its sizes


@dataclass(frozen=True)
class MatchedCheckpoint:
    """A supplied-format checkpoint whose keys all matched the mapping, with the sizes read off them."""

    tensors: dict[str, torch.Tensor]
    mapping: KeyMapping
    sizes: dict[str, int]  # vocab_size, max_seq_len, d_model, d_mlp, n_layers
    sources: dict[str, str]  # size -> the key and shape it was read from


def _stored_shape(rule: KeyRule, tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape the rule's 'shape' describes: a bias stored as [1, n] counts as [n]."""
    shape = tuple(tensor.shape)
    if "bias" in rule.transforms and len(shape) == len(rule.shape) + 1 and shape[0] == 1:
        return shape[1:]
    return shape


def match_checkpoint(tensors: dict[str, torch.Tensor], mapping: KeyMapping, path: str) -> MatchedCheckpoint:
    """Match every key to a rule, infer the sizes, and list every missing, unexpected or misshapen key."""
    found: dict[str, tuple[int, int]] = {}  # key -> (index of its rule, block index or -1)
    unexpected: list[str] = []
    patterns = [rule.pattern() for rule in mapping.rules]
    tensors = {key: tensor for key, tensor in tensors.items() if not mapping.ignored(key)}
    for key in tensors:
        hit = next(((n, m) for n, pattern in enumerate(patterns) if (m := pattern.match(key))), None)
        if hit is None:
            unexpected.append(f"{key} {shape_text(tensors[key])}")
        else:
            n, match = hit
            found[key] = (n, int(match.group(1)) if mapping.rules[n].per_block else -1)
    n_layers = max((block + 1 for _, block in found.values()), default=0)

    # Each size is the value most keys agree on (ties: the first key in mapping order), so that one
    # misshapen tensor is reported as the odd one out instead of redefining the size.
    seen: dict[str, list[tuple[int, str]]] = {}
    for key in sorted(found, key=found.__getitem__):
        rule = mapping.rules[found[key][0]]
        shape = _stored_shape(rule, tensors[key])
        if len(shape) != len(rule.shape):
            continue
        for dim, size in zip(rule.shape, shape, strict=True):
            factor, symbol = _parse_dim(dim)
            if symbol is not None and size % factor == 0 and size > 0:
                seen.setdefault(symbol, []).append((size // factor, f"{key} {list(tensors[key].shape)}"))
    sizes: dict[str, int] = {}
    sources: dict[str, str] = {}
    for symbol, values in seen.items():
        counts = Counter(value for value, _ in values)
        most = max(counts.values())
        sizes[symbol], sources[symbol] = next((v, src) for v, src in values if counts[v] == most)
    if n_layers:
        sizes["n_layers"] = n_layers
        sources["n_layers"] = f"block indices 0..{n_layers - 1} in the keys"

    missing, mismatched = [], []
    for rule in mapping.rules:
        expected = _expected_shape(rule, sizes)
        if rule.per_block and not n_layers:
            missing.append(f"{rule.source} for every block (no block found)")
        for block in range(n_layers) if rule.per_block else [None]:
            key = rule.key(block)
            if key not in tensors and rule.optional:
                continue
            if key not in tensors:
                missing.append(f"{key} (expected {fmt_shape(expected)})")
            elif list(_stored_shape(rule, tensors[key])) != expected:
                also = f" or [1, {fmt_shape(expected)[1:]}" if "bias" in rule.transforms else ""
                mismatched.append(
                    f"{key} expected {fmt_shape(expected)}{also}, found {shape_text(tensors[key])}"
                )
    if missing or unexpected or mismatched:
        raise CheckpointKeysError(path, missing, unexpected, mismatched)
    refuse_non_float(tensors, path)
    absent = [s for s in SIZE_SYMBOLS if s not in sizes]
    if absent:
        raise WeightsError(f"mapping {mapping.origin} gives no shape from which to read {', '.join(absent)}")
    for rule in mapping.rules:
        if rule.same_as is not None and rule.key(None) in tensors:
            _check_tied(tensors, rule, path)
    return MatchedCheckpoint(tensors, mapping, sizes, sources)


def _check_tied(tensors: dict[str, torch.Tensor], rule: KeyRule, path: str) -> None:
    key, other = rule.key(None), str(rule.same_as)
    if other not in tensors:
        raise WeightsError(f"mapping rule for {key} says same_as {other}, which the checkpoint {path} lacks")
    a, b = tensors[key], tensors[other]
    if a.shape != b.shape or not torch.equal(a, b):
        diff = (a.double() - b.double()).abs().max().item() if a.shape == b.shape else math.nan
        raise WeightsError(
            f"checkpoint {path}: {key} differs from {other} (max abs diff {diff:.3g}); the model ties its "
            "LM head to the word embeddings, so they must be equal"
        )


# --------------------------------------------------------------------------------------------------
# Converting to the toolkit's parameters


def split_qkv(fused: torch.Tensor, n_heads: int, layout: str) -> torch.Tensor:
    """Reorder a fused q|k|v axis (axis 0: [3 d, ...]) from ``layout`` into the toolkit's order.

    The toolkit's ``attn.qkv`` holds [Q of all heads | K of all heads | V of all heads], head 0 first
    in each third ("qkv-major"). "head-major" checkpoints hold [head 0: q k v | head 1: q k v | ...].
    """
    three_d, rest = fused.shape[0], tuple(fused.shape[1:])
    if three_d % (3 * n_heads) != 0:
        raise WeightsError(f"a fused q|k|v axis of {three_d} cannot be split into 3 x {n_heads} heads")
    if layout == "qkv-major":  # already the toolkit's order: keep the tensor (a view, no copy)
        return fused
    head_dim = three_d // (3 * n_heads)
    if layout == "qkv-major":
        parts = fused.reshape(3, n_heads, head_dim, *rest)  # (qkv, nh, hs, ...)
    elif layout == "head-major":
        parts = fused.reshape(n_heads, 3, head_dim, *rest)  # (nh, qkv, hs, ...)
        parts = parts.transpose(0, 1)  # (qkv, nh, hs, ...)
    else:
        raise WeightsError(f"unknown qkv_layout {layout!r}; valid layouts: {', '.join(QKV_LAYOUTS)}")
    return parts.reshape(three_d, *rest)


def to_toolkit_state(
    checkpoint: MatchedCheckpoint, n_heads: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under the toolkit's names, in its layout and in ``dtype``: views of the
    checkpoint's tensors where no copy is needed (a transposed weight is a transposed view, which
    ``F.linear`` multiplies as fast)."""
    state: dict[str, torch.Tensor] = {}
    file_ranges = file_backed_ranges()
    for rule in checkpoint.mapping.rules:
        if rule.target is None:  # tied: already checked equal to the tensor that is loaded
            continue
        for block in range(checkpoint.sizes["n_layers"]) if rule.per_block else [None]:
            tensor = converted(checkpoint.tensors[rule.key(block)], dtype, file_ranges)
            for transform in rule.transforms:
                if transform == "transpose":  # stored [in, out] for x @ W -> nn.Linear's [out, in]
                    tensor = tensor.T
                elif transform == "bias":  # [n] or [1, n] -> [n]
                    tensor = tensor.reshape(-1)
                elif transform == "split_qkv":
                    tensor = split_qkv(tensor, n_heads, rule.qkv_layout)
            target = rule.target_key(block)
            if target in state:
                raise WeightsError(f"mapping {checkpoint.mapping.origin} sets {target} twice; each 'to' once")
            state[target] = tensor
    return state
