"""The reference transformer of docs/reference.md: GPT-2-style, decoder-only, batch-first, pre-LayerNorm.

    h = E_word[ids] + E_pos[0..S-1]
    for each block:  t = h + Attn(LN1(h));  h = t + MLP(LN2(t))
    logits = LN_final(h) @ E_word^T          (tied LM head)

The ablation variants of ``ModelConfig`` (eps, attention scaling, GELU form, residual wiring,
norm implementation) are read here and nowhere else. Parameter names are the toolkit's own;
``weights.py`` maps foreign checkpoints onto them.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.config import ModelConfig
from toolkit.errors import InputError
from toolkit.layernorm import FeatureBatchNorm, LayerNorm


def make_norm(config: ModelConfig) -> nn.Module:
    """The normalisation layer that ``config.norm`` names, over the last dimension of size d_model.

    ``torch`` and ``custom`` are the same LayerNorm (PyTorch's, or ``toolkit.layernorm``'s with the
    same state-dict keys); ``rms``, ``none`` and ``batch`` are the training study's alternatives.
    """
    if config.norm == "torch":
        return nn.LayerNorm(config.d_model, eps=config.norm_eps)
    if config.norm == "custom":
        return LayerNorm(config.d_model, eps=config.norm_eps)
    if config.norm == "rms":
        return nn.RMSNorm(config.d_model, eps=config.norm_eps)
    if config.norm == "batch":
        return FeatureBatchNorm(config.d_model, eps=config.norm_eps)
    if config.norm == "none":
        return nn.Identity()
    raise AssertionError(f"ModelConfig accepted an unknown norm {config.norm!r}")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused q|k|v projection (heads contiguous in each)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)  # rows: [Q heads | K heads | V heads]
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        # None lets SDPA use its default 1/sqrt(head_dim); 1.0 is the no-scale ablation.
        self.scale: float | None = None if config.scale_attention else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, S, d)
        q = q.view(B, S, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, nh, S, hs)
        k = k.view(B, S, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, nh, S, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)  # (B, nh, S, hs)
        y = y.transpose(1, 2).reshape(B, S, d)  # (B, S, d), heads concatenated
        return self.out_proj(y)


class MLP(nn.Module):
    """d_model -> d_mlp -> GELU -> d_model."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_mlp)
        self.down = nn.Linear(config.d_mlp, config.d_model)
        self.gelu_approximate = config.gelu  # "none" (exact erf) or "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GELU in place on the fresh up-projection: no second d_mlp-wide buffer (autograd saves what
        # gelu's backward needs). Same values as F.gelu.
        return self.down(torch.ops.aten.gelu_(self.up(x), approximate=self.gelu_approximate))


class Block(nn.Module):
    """One pre-LN transformer block; ``config.residual`` picks how the two skips are wired."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln2 = make_norm(config)
        self.mlp = MLP(config)
        self.residual = config.residual

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # Each skip is added in place into the branch output, a fresh tensor that no backward
        # needs: one activation buffer fewer per add. a + h == h + a exactly, so values are unchanged.
        if self.residual == "parallel":  # h' = h + Attn(LN1(h)) + MLP(LN2(h))  (PaLM / GPT-J)
            return self.attn(self.ln1(h)).add_(h).add_(self.mlp(self.ln2(h)))
        t = self.attn(self.ln1(h)).add_(h)  # t = h + Attn(LN1(h))
        if self.residual == "standard":  # h' = t + MLP(LN2(t))
            return self.mlp(self.ln2(t)).add_(t)
        if self.residual == "input-skip":  # h' = h + MLP(LN2(t))
            return self.mlp(self.ln2(t)).add_(h)
        return self.mlp(self.ln2(t))  # "no-mlp-skip": h' = MLP(LN2(t))


class Transformer(nn.Module):
    """LongTensor ids [B, S] (or [S]) -> logits [B, S, vocab_size]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_final = make_norm(config)
        self.apply(_init_gpt2)
        # GPT-2's scaled init: each residual projection (attention out, MLP down) adds into the
        # residual stream once per block, so its std is 0.02 / sqrt(2 · n_layers).
        for block in cast(list[Block], self.blocks):
            for projection in (block.attn.out_proj, block.mlp.down):
                nn.init.normal_(projection.weight, mean=0.0, std=residual_init_std(config.n_layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)  # (1, S)
        if not torch.compiler.is_compiling():
            self.check_input(ids)
            if ids.device.type == "cpu":  # free on the CPU; on a GPU it would sync every call
                check_ids(ids, self.config)
        positions = self.position_embedding.weight[: ids.shape[1]]  # (S, d): rows 0..S-1, no lookup
        h = self.token_embedding(ids).add_(positions)  # (B, S, d)
        for block in self.blocks:
            h = block(h)
        return F.linear(self.ln_final(h), self.token_embedding.weight)  # (B, S, V), tied head

    def check_input(self, ids: torch.Tensor) -> None:
        """Raise :class:`InputError` for ids of a shape, dtype or length the model cannot take (no sync)."""
        if ids.dim() != 2:
            raise InputError(f"input ids must have shape [B, S] or [S], got {list(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise InputError(f"input ids must be an integer tensor (torch.long), got {ids.dtype}")
        seq_len = ids.shape[1]
        if seq_len < 1:
            raise InputError("input ids are empty; give at least one token")
        if seq_len > self.config.max_seq_len:
            raise InputError(
                f"sequence length {seq_len} exceeds max_seq_len={self.config.max_seq_len}; "
                "shorten the input or raise max_seq_len"
            )


def check_ids(ids: torch.Tensor, config: ModelConfig) -> None:
    """Raise :class:`InputError` for token ids outside the vocabulary.

    ``Transformer.forward`` checks CPU ids itself; on CUDA this reads the ids back (a device sync),
    so studies call it once on the ids they receive, never inside a timed forward.
    """
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= config.vocab_size:
        raise InputError(
            f"token ids must lie in [0, {config.vocab_size - 1}] (vocab_size="
            f"{config.vocab_size}), got ids from {low} to {high}"
        )


def residual_init_std(n_layers: int) -> float:
    """GPT-2's std for the residual projections: 0.02 / sqrt(2 · n_layers)."""
    return 0.02 / math.sqrt(2 * n_layers)


def _init_gpt2(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit norm gains."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
