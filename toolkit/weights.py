"""Checkpoints: reading them safely, mapping foreign keys, inferring the config, verifying, exporting.

A checkpoint in SPEC.md's supplied format is read as plain tensors (``.safetensors``, or ``.pt``/``.pth``
through ``torch.load(weights_only=True)``, which refuses anything that would run code), matched key by
key against a readable mapping (``keys_mapping.json``: foreign key -> toolkit parameter, through named
transforms), and the model's sizes are read off the shapes. The head count is in no shape: it is given
(``n_heads``), stored in a toolkit export, found by trying every divisor of d_model against reference
examples, or the default. Reference examples (``input_ids`` and the ``logits`` another implementation
computed for them) then prove that the loaded model reproduces them.

Examples files: ``.safetensors`` with tensors ``input_ids_<i>`` (int64 [S]) and ``logits_<i>``
(float [S, V]) for i = 0..n-1, or a ``.pt`` list of ``{"input_ids": LongTensor[S], "logits":
FloatTensor[S, V]}``. Toolkit exports are safetensors in the toolkit's own parameter names with
metadata ``{"toolkit_config": <ModelConfig as JSON>}``.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from toolkit.config import ModelConfig, from_dict
from toolkit.errors import CheckpointKeysError, ConfigError, WeightsError
from toolkit.files import atomic_path
from toolkit.model import Transformer

ProgressCallback = Callable[[int, int, str], None]
"""``callback(done, total, description)``, as the CLI's progress bar expects."""

# safetensors writes its metadata in hash order: one key per file keeps the bytes reproducible.
EXPORT_METADATA_KEY = "toolkit_config"  # a toolkit export: its ModelConfig as JSON
EXAMPLES_METADATA = {"format": "toolkit-examples"}
SIZE_SYMBOLS = ("vocab_size", "max_seq_len", "d_model", "d_mlp")
TRANSFORMS = ("rename", "transpose", "bias", "split_qkv", "tied")
QKV_LAYOUTS = ("qkv-major", "head-major")
TENSOR_SUFFIXES = (".safetensors", ".pt", ".pth")

SHIPPED_DIR = Path("weights")
SHIPPED_WEIGHTS = "reference_model.safetensors"
SHIPPED_EXAMPLES = "reference_examples.safetensors"
BUILTIN_MAPPING = "built-in (supplied format)"


# --------------------------------------------------------------------------------------------------
# Key mappings


@dataclass(frozen=True)
class KeyRule:
    """One foreign key ('{i}' = block index) -> one toolkit parameter, through ``transforms``."""

    source: str
    target: str | None  # None for "tied": checked against ``same_as``, not loaded
    shape: tuple[str, ...]  # stored shape in size symbols: "d_model", "3*d_model", "1"
    transforms: tuple[str, ...]
    qkv_layout: str = "qkv-major"
    same_as: str | None = None

    @property
    def per_block(self) -> bool:
        return "{i}" in self.source

    def key(self, block: int | None) -> str:
        return self.source.replace("{i}", str(block))

    def target_key(self, block: int | None) -> str:
        assert self.target is not None
        return self.target.replace("{i}", str(block))

    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.source).replace(re.escape("{i}"), r"(\d+)") + "$")


@dataclass(frozen=True)
class KeyMapping:
    name: str
    origin: str  # the file it was read from, or BUILTIN_MAPPING
    rules: tuple[KeyRule, ...]


def read_mapping(path: str | Path | None = None) -> KeyMapping:
    """The key mapping in ``path``, or the built-in mapping of SPEC.md's supplied format."""
    if path is None:
        text = resources.files("toolkit").joinpath("data/keys_mapping.json").read_text(encoding="utf-8")
        origin = BUILTIN_MAPPING
    else:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(
                f"mapping file {path} does not exist; pass --mapping PATH to a JSON key mapping"
            )
        text, origin = path.read_text(encoding="utf-8"), str(path)
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
    return KeyMapping(str(data.get("name", origin)), origin, rules)


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
    return KeyRule(raw["from"], target, tuple(str(d) for d in shape), transforms, layout, same_as)


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


# --------------------------------------------------------------------------------------------------
# Reading tensors


def read_tensors(path: str | Path, what: str = "checkpoint") -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors in a ``.safetensors`` / ``.pt`` / ``.pth`` file, and its safetensors metadata.

    ``.pt`` files are read with ``torch.load(weights_only=True)`` only: a file holding anything but
    tensors and plain containers (a pickled callable, a class) is refused without running it.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{what} file {path} does not exist; pass an existing .safetensors, .pt or .pth file"
        )
    suffix = path.suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise WeightsError(
            f"{what} file {path} must end in .safetensors, .pt or .pth, not {suffix or '(none)'}"
        )
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                return {key: handle.get_tensor(key) for key in handle.keys()}, metadata  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(
                f"{what} file {path} is not a readable safetensors file (truncated?): {exc}"
            ) from None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's message carries terminal colours
        found = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|$)", text, flags=re.MULTILINE)
        reason = found.group(1).strip() if found else (text.splitlines() or [type(exc).__name__])[0]
        raise WeightsError(
            f"refusing {what} file {path}: it holds objects other than tensors, which would run code when "
            f"unpickled ({reason}); save plain tensors (state_dict / safetensors) instead"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{what} file {path} is not a readable torch file (truncated?): {exc}") from None
    return content, {}


def _as_state_dict(content: Any, path: Path) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):  # the usual {"state_dict": {...}} / {"model": {...}} wrappers
        if isinstance(content, dict) and isinstance(content.get(wrapper), dict):
            content = content[wrapper]
    if not isinstance(content, dict) or not content:
        raise WeightsError(f"checkpoint {path} must hold a non-empty dict of named tensors (a state dict)")
    not_tensors = sorted(str(k) for k, v in content.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise WeightsError(f"checkpoint {path}: entries that are not tensors: {', '.join(not_tensors)}")
    return {str(k): v for k, v in content.items()}


def _shape(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def _fmt_shape(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(map(str, dims)) + "]"


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
    for key in tensors:
        hit = next(((n, m) for n, pattern in enumerate(patterns) if (m := pattern.match(key))), None)
        if hit is None:
            unexpected.append(f"{key} {_shape(tensors[key])}")
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
            if key not in tensors:
                missing.append(f"{key} (expected {_fmt_shape(expected)})")
            elif list(_stored_shape(rule, tensors[key])) != expected:
                also = f" or [1, {_fmt_shape(expected)[1:]}" if "bias" in rule.transforms else ""
                mismatched.append(
                    f"{key} expected {_fmt_shape(expected)}{also}, found {_shape(tensors[key])}"
                )
    if missing or unexpected or mismatched:
        raise CheckpointKeysError(path, missing, unexpected, mismatched)
    absent = [s for s in SIZE_SYMBOLS if s not in sizes]
    if absent:
        raise WeightsError(f"mapping {mapping.origin} gives no shape from which to read {', '.join(absent)}")
    for rule in mapping.rules:
        if rule.same_as is not None:
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
    head_dim = three_d // (3 * n_heads)
    if layout == "qkv-major":
        parts = fused.reshape(3, n_heads, head_dim, *rest)  # (qkv, nh, hs, ...)
    elif layout == "head-major":
        parts = fused.reshape(n_heads, 3, head_dim, *rest)  # (nh, qkv, hs, ...)
        parts = parts.transpose(0, 1)  # (qkv, nh, hs, ...)
    else:
        raise WeightsError(f"unknown qkv_layout {layout!r}; valid layouts: {', '.join(QKV_LAYOUTS)}")
    return parts.reshape(three_d, *rest)


def to_toolkit_state(checkpoint: MatchedCheckpoint, n_heads: int) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under the toolkit's names, in its layout and in float32."""
    state: dict[str, torch.Tensor] = {}
    for rule in checkpoint.mapping.rules:
        if rule.target is None:  # tied: already checked equal to the tensor that is loaded
            continue
        for block in range(checkpoint.sizes["n_layers"]) if rule.per_block else [None]:
            tensor = checkpoint.tensors[rule.key(block)].to(torch.float32)
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
            state[target] = tensor.contiguous()
    return state


def _state_problems(
    expected: dict[str, torch.Size], state: dict[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected and misshapen keys of ``state`` against the shapes a model expects."""
    missing = [f"{k} (expected {list(shape)})" for k, shape in expected.items() if k not in state]
    unexpected = [f"{k} {_shape(v)}" for k, v in state.items() if k not in expected]
    mismatched = [
        f"{k} expected {list(expected[k])}, found {_shape(v)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k]
    ]
    return missing, unexpected, mismatched


def _parameter_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in Transformer(config).state_dict().items()}


def _build(config: ModelConfig, state: dict[str, torch.Tensor], device: torch.device) -> Transformer:
    """A model of ``config`` holding exactly the tensors of ``state``.

    (Built on the CPU and then given ``state``: a meta-device build would skip the random init, but
    its first use in a process costs seconds.)
    """
    model = Transformer(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------------
# Reference examples


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
        count = len(content) // 2
        wanted = {f"{name}_{i}" for i in range(count) for name in ("input_ids", "logits")}
        if set(content) != wanted or count == 0:
            odd = sorted(set(content) ^ wanted)
            raise WeightsError(
                f"examples file {path} must hold input_ids_<i> and logits_<i> for i = 0..n-1; "
                f"does not fit: {', '.join(odd[:6]) or '(empty)'}"
            )
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
            f"{where}: logits {_shape(logits)} do not match input_ids of length {ids.shape[0]}"
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


# --------------------------------------------------------------------------------------------------
# Verification and the head-count search


@dataclass(frozen=True)
class ExampleResult:
    """How far the loaded model's logits are from one example's reference logits."""

    index: int
    seq_len: int
    max_abs_diff: float
    rmse: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeadTrial:
    """One head count tried in the search; a failed one stops at the first example it misses."""

    n_heads: int
    max_abs_diff: float  # over the examples run
    examples_run: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def compare_examples(
    model: Transformer,
    examples: Sequence[Example],
    atol: float,
    stop_at_failure: bool = False,
    progress: ProgressCallback | None = None,
) -> list[ExampleResult]:
    """Run every example (shortest first) and compare with its logits in float64; sorted by index."""
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: examples[i].seq_len)
    results: list[ExampleResult] = []
    for done, i in enumerate(order):
        example = examples[i]
        logits = model(example.input_ids.to(device))[0]  # (S, V)
        diff = logits.detach().to("cpu", torch.float64) - example.logits.to(torch.float64)
        max_abs = float(diff.abs().max())
        rmse = float(diff.pow(2).mean().sqrt())
        passed = max_abs <= atol  # NaN never passes
        results.append(ExampleResult(i, example.seq_len, max_abs, rmse, passed))
        if progress is not None:
            progress(done + 1, len(order), f"example {i} (S={example.seq_len})")
        if stop_at_failure and not passed:
            break
    return sorted(results, key=lambda r: r.index)


def _max_diff(results: Sequence[ExampleResult]) -> float:
    diffs = [r.max_abs_diff for r in results]
    return max(diffs, key=lambda d: math.inf if math.isnan(d) else d) if diffs else math.nan


def search_heads(
    build: Callable[[int], Transformer],
    d_model: int,
    examples: Sequence[Example],
    atol: float,
    progress: ProgressCallback | None = None,
) -> tuple[int, list[HeadTrial], list[ExampleResult]]:
    """Try every divisor of d_model as the head count; keep the one that reproduces the examples.

    Returns the chosen head count, every trial, and the chosen model's per-example results. When no
    divisor reproduces them, the closest is kept (and fails); when several do (e.g. only length-1
    examples, where attention cannot tell heads apart), the default head count is kept if among
    them, else the smallest.
    """
    candidates = [h for h in range(1, d_model + 1) if d_model % h == 0]
    trials: list[HeadTrial] = []
    results_of: dict[int, list[ExampleResult]] = {}
    for done, heads in enumerate(candidates):
        if progress is not None:
            progress(done, len(candidates), f"trying n_heads={heads}")
        results = compare_examples(build(heads), examples, atol, stop_at_failure=True)
        passed = len(results) == len(examples) and all(r.passed for r in results)
        trials.append(HeadTrial(heads, _max_diff(results), len(results), passed))
        results_of[heads] = results
    if progress is not None:
        progress(len(candidates), len(candidates), "head-count search done")
    matching = [t.n_heads for t in trials if t.passed]
    if matching:
        chosen = ModelConfig.n_heads if ModelConfig.n_heads in matching else matching[0]
        return chosen, trials, results_of[chosen]
    closest = min(trials, key=lambda t: math.inf if math.isnan(t.max_abs_diff) else t.max_abs_diff).n_heads
    return closest, trials, compare_examples(build(closest), examples, atol)


# --------------------------------------------------------------------------------------------------
# The whole load: checkpoint -> model + report


@dataclass(frozen=True)
class LoadReport:
    """What was loaded, from where, the config read off it, and how well it reproduces the examples."""

    weights_path: str
    examples_path: str | None
    mapping: str  # the mapping's file, BUILTIN_MAPPING, or "none (toolkit export)"
    checkpoint_format: str  # "supplied" (through a key mapping) or "toolkit" (an export)
    config: ModelConfig
    config_sources: dict[str, str]  # field -> where its value came from
    n_heads_source: str  # "flag", "checkpoint" (a toolkit export's config), "search" or "default"
    head_trials: tuple[HeadTrial, ...]
    results: tuple[ExampleResult, ...]
    atol: float
    device: str
    n_params: int

    @property
    def verified(self) -> bool:
        """Whether any example was compared (without examples only keys and shapes are checked)."""
        return bool(self.results)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def max_abs_diff(self) -> float:
        return _max_diff(self.results)

    @property
    def heads_matching(self) -> list[int]:
        return [t.n_heads for t in self.head_trials if t.passed]

    @property
    def summary(self) -> str:
        """The verdict in words: pass/fail, and how the head count was found."""
        lines = []
        heads = self.config.n_heads
        if self.n_heads_source == "search":
            others = [t.n_heads for t in self.head_trials if not t.passed]
            matching = self.heads_matching
            if len(matching) == 1:
                lines.append(
                    f"n_heads={heads} found by search: it reproduces the examples; "
                    f"{', '.join(map(str, others)) or 'no other divisor'} did not."
                )
            elif matching:
                lines.append(
                    f"n_heads {', '.join(map(str, matching))} all reproduce the examples, which cannot "
                    f"tell them apart; kept {heads}. Pass --heads, or examples longer than one token."
                )
            else:
                lines.append(
                    "no head count reproduces the examples (tried every divisor of "
                    f"d_model={self.config.d_model}); closest: n_heads={heads}."
                )
        else:
            lines.append(f"n_heads={heads} from {self.n_heads_source}.")
        if not self.verified:
            lines.append("LOADED: keys and shapes match; no examples given, so outputs are not verified.")
        elif self.passed:
            lines.append(
                f"PASS: all {len(self.results)} examples reproduced within atol {self.atol:g} "
                f"(max abs diff {self.max_abs_diff:.3g})."
            )
        else:
            failed = sum(not r.passed for r in self.results)
            lines.append(
                f"FAIL: {failed} of {len(self.results)} examples differ by more than atol {self.atol:g} "
                f"(max abs diff {self.max_abs_diff:.3g})."
            )
        return "\n".join(lines)

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
            "examples": [r.to_dict() for r in self.results],
            "weights_path": self.weights_path,
            "examples_path": self.examples_path,
            "mapping": self.mapping,
            "checkpoint_format": self.checkpoint_format,
            "n_params": self.n_params,
            "device": self.device,
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


def _read_export(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> _Readable:
    saved = _export_config(metadata, path)
    missing, unexpected, mismatched = _state_problems(_parameter_shapes(saved), tensors)
    if missing or unexpected or mismatched:
        raise CheckpointKeysError(str(path), missing, unexpected, mismatched)
    state = {k: v.to(torch.float32) for k, v in tensors.items()}
    sources = {name: "config stored in the export" for name in (*SIZE_SYMBOLS, "n_layers")}
    return _Readable(saved, lambda heads: state, sources, "none (toolkit export)", "toolkit", saved.n_heads)


def _read_supplied(tensors: dict[str, torch.Tensor], mapping: KeyMapping, path: Path) -> _Readable:
    matched = match_checkpoint(tensors, mapping, str(path))
    sizes = matched.sizes
    base = ModelConfig(
        vocab_size=sizes["vocab_size"],
        max_seq_len=sizes["max_seq_len"],
        d_model=sizes["d_model"],
        n_heads=1,
        n_layers=sizes["n_layers"],
        d_mlp=sizes["d_mlp"],
    )
    problems = _state_problems(_parameter_shapes(base), to_toolkit_state(matched, 1))
    if any(problems):
        named = zip(("unset", "unknown targets", "wrong shape after transforms"), problems, strict=True)
        raise WeightsError(
            f"mapping {mapping.origin} does not fill the toolkit model: "
            + " | ".join(f"{what}: {'; '.join(items)}" for what, items in named if items)
            + "; fix the mapping's 'to' names or transforms"
        )
    return _Readable(
        base,
        lambda heads: to_toolkit_state(matched, heads),
        dict(matched.sources),
        mapping.origin,
        "supplied",
        None,
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
) -> tuple[Transformer, LoadReport]:
    """Load a checkpoint (supplied format through ``mapping``, or a toolkit export) and verify it.

    ``n_heads``: the head count; when None it is a toolkit export's own, else found by searching the
    divisors of d_model against ``examples``, else the default (2). Returns the model (eval mode, on
    ``device``, float32) and the report. Raises :class:`WeightsError` (or :class:`ConfigError`) for
    input that cannot be loaded; a model that loads but does not reproduce the examples is reported
    (``report.passed`` is False), not raised.
    """
    torch_device = torch.device(device)
    weights_path = Path(weights)
    content, metadata = read_tensors(weights_path)
    tensors = _as_state_dict(content, weights_path)
    if EXPORT_METADATA_KEY in metadata:
        if mapping is not None:
            raise WeightsError(
                f"{weights_path} is a toolkit export, in the toolkit's own names; drop --mapping"
            )
        readable = _read_export(tensors, metadata, weights_path)
    else:
        readable = _read_supplied(tensors, read_mapping(mapping), weights_path)
    base = readable.base
    example_list = read_examples(examples) if examples is not None else []
    check_examples(example_list, base, str(examples))

    def build(heads: int) -> Transformer:
        return _build(base.replace(n_heads=heads), readable.state_of(heads), torch_device)

    trials: list[HeadTrial] = []
    results: list[ExampleResult] = []
    if n_heads is not None:
        heads, heads_source = n_heads, "flag"
    elif readable.saved_heads is not None:
        heads, heads_source = readable.saved_heads, "checkpoint"
    elif example_list:
        heads, trials, results = search_heads(build, base.d_model, example_list, atol, progress)
        heads_source = "search"
    elif base.d_model % ModelConfig.n_heads == 0:
        heads, heads_source = ModelConfig.n_heads, "default"
    else:
        raise WeightsError(
            f"d_model={base.d_model} is not divisible by the default {ModelConfig.n_heads} heads, and the "
            "head count is in no shape; pass --heads N, or --examples to search for it"
        )
    model = build(heads)  # a head count that does not divide d_model raises ConfigError here
    if heads_source != "search":
        results = compare_examples(model, example_list, atol, progress=progress)
    report = LoadReport(
        weights_path=str(weights_path),
        examples_path=None if examples is None else str(examples),
        mapping=readable.mapping,
        checkpoint_format=readable.checkpoint_format,
        config=model.config,
        config_sources={**readable.sources, "n_heads": heads_source},
        n_heads_source=heads_source,
        head_trials=tuple(trials),
        results=tuple(results),
        atol=atol,
        device=str(torch_device),
        n_params=sum(p.numel() for p in model.parameters()),
    )
    return model, report


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
    return path


def export_checkpoint(model: Transformer, path: str | Path) -> Path:
    """Write ``model`` in the toolkit's own names as safetensors, its config in the metadata."""
    path = check_export_path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {EXPORT_METADATA_KEY: json.dumps(model.config.to_dict())}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def shipped_files() -> tuple[Path, Path]:
    """The shipped checkpoint and examples: ``weights/`` in the current directory, else the
    ``weights/`` of the source tree the package lives in (a checkout or an editable install)."""
    for folder in (SHIPPED_DIR, Path(__file__).resolve().parent.parent / SHIPPED_DIR):
        if (folder / SHIPPED_WEIGHTS).is_file():
            return folder / SHIPPED_WEIGHTS, folder / SHIPPED_EXAMPLES
    raise WeightsError(
        f"no --weights given and the shipped {SHIPPED_DIR / SHIPPED_WEIGHTS} is neither in the current "
        "directory nor beside the installed package; run from the repository root or pass --weights PATH"
    )
