"""Analytic FLOP count of one forward pass of the reference transformer, and the machine's matmul rate.

Convention (stated with every rate the toolkit prints): 2·m·n·k FLOP for every matrix product
(one multiply and one add per term), attention counted as **full** S×S products (Q·Kᵀ and P·V) even
though causal attention needs only about half of them. Element-wise work (LayerNorm, softmax,
GELU, bias adds, embeddings) is not counted: it is a few percent of the total and runs at memory
speed, not matmul speed. This is the convention of ``torch.utils.flop_counter`` on eager attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from toolkit.config import ModelConfig
from toolkit.timing.engine import measure

FLOP_CONVENTION = (
    "2·m·n·k FLOP per matrix product; attention as full S×S (causal masking not subtracted); "
    "element-wise ops not counted"
)


@dataclass(frozen=True)
class FlopCount:
    """Matmul FLOP of one forward pass over ``batch`` sequences of ``seq_len`` tokens, by component."""

    batch: int
    seq_len: int
    qkv: int  # all layers
    attention_scores: int  # Q·Kᵀ, all heads and layers, full S×S
    attention_values: int  # P·V, all heads and layers, full S×S
    out_proj: int
    mlp_up: int
    mlp_down: int
    lm_head: int

    @property
    def attention(self) -> int:
        return self.attention_scores + self.attention_values

    @property
    def total(self) -> int:
        return (
            self.qkv
            + self.attention_scores
            + self.attention_values
            + self.out_proj
            + self.mlp_up
            + self.mlp_down
            + self.lm_head
        )

    @property
    def per_token(self) -> float:
        return self.total / (self.batch * self.seq_len)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "seq_len": self.seq_len,
            "qkv": self.qkv,
            "attention_scores": self.attention_scores,
            "attention_values": self.attention_values,
            "out_proj": self.out_proj,
            "mlp_up": self.mlp_up,
            "mlp_down": self.mlp_down,
            "lm_head": self.lm_head,
            "total": self.total,
            "convention": FLOP_CONVENTION,
        }


def forward_flops(config: ModelConfig, batch: int = 1, seq_len: int | None = None) -> FlopCount:
    """Matmul FLOP of ``Transformer(config)`` on ids of shape [batch, seq_len] (default: max_seq_len)."""
    S = config.max_seq_len if seq_len is None else seq_len
    tokens = batch * S
    d, L = config.d_model, config.n_layers
    q_width = config.n_heads * config.head_dim  # d, unless head_size is set apart
    qkv_width = (config.n_heads + 2 * config.kv_heads) * config.head_dim  # 3d without grouped kv heads
    up_projections = 2 if config.mlp == "swiglu" else 1  # gate and up
    return FlopCount(
        batch=batch,
        seq_len=S,
        qkv=L * 2 * tokens * d * qkv_width,
        attention_scores=L * 2 * batch * S * S * q_width,  # n_heads · (S × head_dim) @ (head_dim × S)
        attention_values=L * 2 * batch * S * S * q_width,  # n_heads · (S × S) @ (S × head_dim)
        out_proj=L * 2 * tokens * q_width * d,
        mlp_up=L * 2 * tokens * d * config.d_mlp * up_projections,
        mlp_down=L * 2 * tokens * config.d_mlp * d,
        lm_head=2 * tokens * d * config.vocab_size,
    )


# --------------------------------------------------------------------------------------------------
# The machine's matmul rate, the reference for achieved rates


def matmul_operands(
    device: torch.device, dtype: torch.dtype, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two square matrices for measuring the matmul rate (1024 on CPU, 4096 on GPU by default)."""
    n = size or (4096 if device.type == "cuda" else 1024)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    return a, b


def matmul_rate_gflops(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    *,
    size: int | None = None,
    budget_s: float = 2.0,
    target_rel_ci: float = 0.02,
) -> float:
    """This machine's dense matmul rate now: 2·n³ FLOP of an n×n product over its median time."""
    a, b = matmul_operands(device, dtype, size)
    out = torch.empty_like(a)
    measurement = measure(
        lambda: torch.mm(a, b, out=out),
        device=device,
        budget_s=budget_s,
        target_rel_ci=target_rel_ci,
        min_samples=5,
    )
    n = a.shape[0]
    return 2.0 * n**3 / (measurement.median_ms * 1e-3) / 1e9
