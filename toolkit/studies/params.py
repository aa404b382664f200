"""How big is the model: parameters per component, bytes per dtype, the KV cache, and the memory it
really takes.

Counts come from the model's own parameters (the tied LM head counted once); the attention's are
also split into its q, k|v and output projections (grouped kv heads make k|v smaller). The KV cache
holds 2 · layers · kv_heads · head_dim values per token. Memory is measured:
the process's resident set growth when the model is built, and the peak of one forward pass.
On the CPU the peak is the kernel's resident high-water mark (reset through /proc/self/clear_refs),
or RSS sampled every millisecond where that is not available; on CUDA it is
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from typing import Any, cast

import pandas as pd
import torch

from toolkit.config import ModelConfig
from toolkit.device import device_name
from toolkit.memory import cuda_peak_during, memory_shortfall, peak_rss_during, rss_bytes
from toolkit.model import Block, Transformer

BYTES_PER_ELEMENT = {"float32": 4, "bfloat16/float16": 2, "int8": 1}


@dataclass(frozen=True)
class ComponentCount:
    """Parameters of one part of the model; ``shared`` parts reuse another part's tensor."""

    component: str
    params: int
    shared_with: str | None = None


@dataclass(frozen=True)
class MemoryMeasurement:
    """Measured memory, in bytes, of building the model and running one forward pass."""

    device: str
    method: str
    weights_bytes_expected: int
    build_bytes: int
    forward_peak_bytes: int
    activation_bytes: int
    batch: int
    seq_len: int


@dataclass(frozen=True)
class ParamsReport:
    config: ModelConfig
    dtype: str
    device_name: str
    by_component: list[ComponentCount]
    total_params: int
    bytes_by_dtype: dict[str, int]
    memory: MemoryMeasurement | None
    attention_parts: dict[str, int]  # summed over the blocks: q, k|v and output projections, q/k norms
    memory_skipped: str | None = None  # why memory was not measured (the model would not fit)

    @property
    def kv_values_per_token(self) -> int:
        """Values the KV cache holds per token: 2 (k and v) · layers · kv_heads · head_dim."""
        return 2 * self.config.n_layers * self.config.kv_heads * self.config.head_dim

    @property
    def kv_cache_bytes_per_token(self) -> int:
        return self.kv_values_per_token * self.element_size

    @property
    def kv_cache_bytes_full_context(self) -> int:
        """The cache at the model's full context (max_seq_len tokens)."""
        return self.kv_cache_bytes_per_token * self.config.max_seq_len

    @property
    def element_size(self) -> int:
        """Bytes per parameter in this report's dtype."""
        return _element_size(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "dtype": self.dtype,
            "device_name": self.device_name,
            "total_params": self.total_params,
            "by_component": {c.component: c.params for c in self.by_component},
            "shared_components": {c.component: c.shared_with for c in self.by_component if c.shared_with},
            "bytes_by_dtype": self.bytes_by_dtype,
            "memory": asdict(self.memory) if self.memory is not None else None,
            "memory_skipped": self.memory_skipped,
            "attention_parts": dict(self.attention_parts),
            "kv_cache_values_per_token": self.kv_values_per_token,
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
            "kv_cache_bytes_full_context": self.kv_cache_bytes_full_context,
            "kv_cache_context_tokens": self.config.max_seq_len,
            "kv_cache_bytes_per_token_by_dtype": {
                name: self.kv_values_per_token * size for name, size in BYTES_PER_ELEMENT.items()
            },
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.by_component])


def count_params(model: Transformer) -> list[ComponentCount]:
    """Parameters per component, in model order; the tied LM head is listed with 0 of its own."""
    rows = [ComponentCount("token embedding", _numel(model.token_embedding))]
    if model.config.positions == "learned":  # RoPE has no weights
        rows.append(ComponentCount("position embedding", _numel(model.position_embedding)))
    for index, block in enumerate(cast(list[Block], model.blocks)):
        rows.append(ComponentCount(f"block {index} attention", _numel(block.attn)))
        rows.append(ComponentCount(f"block {index} MLP", _numel(block.mlp)))
        rows.append(ComponentCount(f"block {index} norms", _numel(block.ln1) + _numel(block.ln2)))
    rows.append(ComponentCount("final norm", _numel(model.ln_final)))
    if model.config.tied_head:
        rows.append(ComponentCount("LM head", 0, shared_with="token embedding"))
    else:
        rows.append(ComponentCount("LM head", _numel(model.lm_head)))
    counted = sum(row.params for row in rows)
    unique = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    if counted != unique:
        raise AssertionError(f"component counts sum to {counted}, the model has {unique} parameters")
    return rows


def attention_parts(model: Transformer) -> dict[str, int]:
    """The attention's parameters over all blocks, by projection (weights and biases)."""
    parts = {"q projection": 0, "k and v projections": 0, "output projection": 0, "q/k norms": 0}
    for block in cast(list[Block], model.blocks):
        attn = block.attn
        q_rows, kv_rows, _ = attn.split
        per_row = attn.qkv.in_features + (1 if attn.qkv.bias is not None else 0)
        parts["q projection"] += q_rows * per_row
        parts["k and v projections"] += 2 * kv_rows * per_row
        parts["output projection"] += _numel(attn.out_proj)
        if attn.qk_norm:
            parts["q/k norms"] += _numel(attn.q_norm) + _numel(attn.k_norm)
    return parts


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _element_size(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def count_report(
    config: ModelConfig, dtype: str = "float32", memory_skipped: str | None = None
) -> ParamsReport:
    """Counts and bytes only (no measurement); builds the model on the meta device, so it is instant
    and allocates nothing, whatever the model's size."""
    with torch.device("meta"):
        model = Transformer(config)
    return _report(model, config, dtype, "meta", memory=None, memory_skipped=memory_skipped)


def _report(
    model: Transformer,
    config: ModelConfig,
    dtype: str,
    name: str,
    memory: MemoryMeasurement | None,
    memory_skipped: str | None = None,
) -> ParamsReport:
    rows = count_params(model)
    total = sum(row.params for row in rows)
    return ParamsReport(
        config=config,
        dtype=dtype,
        device_name=name,
        by_component=rows,
        total_params=total,
        bytes_by_dtype={name: total * size for name, size in BYTES_PER_ELEMENT.items()},
        memory=memory,
        attention_parts=attention_parts(model),
        memory_skipped=memory_skipped,
    )


def measure_params(
    config: ModelConfig,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seq_len: int | None = None,
    batch: int = 1,
) -> ParamsReport:
    """Count the parameters and measure the memory of building the model and of one forward pass.

    A model (or forward pass) that would not fit in the device's available memory is only counted,
    on the meta device; the report's ``memory_skipped`` says why, with both figures.
    """
    seq_len = config.sequence_length(seq_len)
    dtype_name = str(dtype).removeprefix("torch.")
    element_size = torch.empty((), dtype=dtype).element_size()
    shortfall = memory_shortfall([(config, batch, seq_len)], device, element_size)
    if shortfall is not None:
        return count_report(config, dtype_name, memory_skipped=f"memory not measured: {shortfall}")
    if device.type == "cuda":
        model, memory = _measure_cuda(config, device, dtype, seq_len, batch)
    else:
        model, memory = _measure_cpu(config, dtype, seq_len, batch)
    return _report(model, config, dtype_name, device_name(device), memory)


def _input_ids(config: ModelConfig, batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator).to(device)


def _measure_cuda(
    config: ModelConfig, device: torch.device, dtype: torch.dtype, seq_len: int, batch: int
) -> tuple[Transformer, MemoryMeasurement]:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    with torch.device(device):
        model = Transformer(config).to(dtype).eval()
    torch.cuda.synchronize(device)
    built = torch.cuda.memory_allocated(device)
    ids = _input_ids(config, batch, seq_len, device)
    with torch.inference_mode():
        start, peak = cuda_peak_during(lambda: model(ids), device)
    memory = MemoryMeasurement(
        device="cuda",
        method="CUDA allocated memory; forward peak from torch.cuda.max_memory_allocated",
        weights_bytes_expected=sum(p.numel() * p.element_size() for p in model.parameters()),
        build_bytes=built - before,
        forward_peak_bytes=peak - before,
        activation_bytes=peak - start,
        batch=batch,
        seq_len=seq_len,
    )
    return model, memory


def _measure_cpu(
    config: ModelConfig, dtype: torch.dtype, seq_len: int, batch: int
) -> tuple[Transformer, MemoryMeasurement]:
    gc.collect()
    before = rss_bytes()
    model = Transformer(config).to(dtype).eval()
    gc.collect()
    built = rss_bytes()
    ids = _input_ids(config, batch, seq_len, torch.device("cpu"))
    with torch.inference_mode():
        peak, method = peak_rss_during(lambda: model(ids))
    memory = MemoryMeasurement(
        device="cpu",
        method=f"RSS; forward peak from the {method}",
        weights_bytes_expected=sum(p.numel() * p.element_size() for p in model.parameters()),
        build_bytes=built - before,
        forward_peak_bytes=peak - before,
        activation_bytes=max(peak - built, 0),
        batch=batch,
        seq_len=seq_len,
    )
    return model, memory
