"""The reference transformer of docs/reference.md: GPT-2-style, decoder-only, batch-first, pre-LayerNorm.

    h = E_word[ids] + E_pos[0..S-1]
    for each block:  t = h + Attn(LN1(h));  h = t + MLP(LN2(t))
    logits = LN_final(h) @ E_word^T          (tied LM head)

The ablation variants of ``ModelConfig`` (eps, attention scaling, GELU form, residual wiring,
norm implementation) are read here and nowhere else, and so are the model families' fields: RMSNorm,
rotary positions (RoPE) instead of the position table, grouped key/value heads, a gated SiLU MLP,
which projections have biases, per-head q/k RMSNorm and a separate LM head. Each is picked once,
when the module is built. Parameter names are the toolkit's own; ``toolkit.weights`` maps foreign
checkpoints onto them.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.config import ModelConfig
from toolkit.errors import InputError
from toolkit.layernorm import FeatureBatchNorm, LayerNorm, RMSNorm


def make_norm(config: ModelConfig) -> nn.Module:
    """The normalisation layer that ``config.norm`` names, over the last dimension of size d_model.

    ``torch`` and ``custom`` are the same LayerNorm (PyTorch's, or ``toolkit.layernorm``'s with the
    same state-dict keys); ``rms`` (the toolkit's fused kernels) and ``rms-torch`` (PyTorch's) the same
    RMSNorm; ``none`` and ``batch`` are the training study's alternatives.
    """
    if config.norm == "torch":
        return nn.LayerNorm(config.d_model, eps=config.norm_eps)
    if config.norm == "custom":
        return LayerNorm(config.d_model, eps=config.norm_eps)
    if config.norm in ("rms", "rms-torch"):
        return make_rms_norm(config, config.d_model)
    if config.norm == "batch":
        return FeatureBatchNorm(config.d_model, eps=config.norm_eps)
    if config.norm == "none":
        return nn.Identity()
    raise AssertionError(f"ModelConfig accepted an unknown norm {config.norm!r}")


def make_rms_norm(config: ModelConfig, size: int) -> nn.Module:
    """An RMSNorm over ``size`` features: PyTorch's for ``norm="rms-torch"``, else the toolkit's fused
    one (the model's norms, and Qwen3's per-head q/k norms)."""
    if config.norm == "rms-torch":
        return nn.RMSNorm(size, eps=config.norm_eps)
    return RMSNorm(size, eps=config.norm_eps)


# --------------------------------------------------------------------------------------------------
# Rotary position embeddings, as Hugging Face computes them


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """float32 [r / 2]: theta^(-2i/r) for the r rotated dims of a head, with the config's scaling.

    ``linear`` divides every frequency by the factor; ``llama3`` divides those whose wavelength
    exceeds L / low_freq_factor (L = the original context), keeps those below L / high_freq_factor,
    and blends those between with s = (L / wavelength - low) / (high - low).
    """
    r = config.rotary_dims
    exponents = torch.arange(0, r, 2, dtype=torch.int64, device="cpu").float() / r
    inv_freq = 1.0 / (config.rope_theta**exponents)
    if config.rope_scaling == "linear":
        return inv_freq / config.rope_factor
    if config.rope_scaling == "llama3":
        low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
        context = config.rope_original_max_seq_len
        wavelength = 2 * math.pi / inv_freq
        scaled = torch.where(wavelength > context / low, inv_freq / config.rope_factor, inv_freq)
        smooth = (context / wavelength - low) / (high - low)
        blended = (1 - smooth) * scaled / config.rope_factor + smooth * scaled
        between = ~(wavelength < context / high) & ~(wavelength > context / low)
        return torch.where(between, blended, scaled)
    return inv_freq


def rope_cos_sin(
    inv_freq: torch.Tensor, seq_len: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [S, r] of positions 0..S-1 (angles in float32, then cast to the model's dtype)."""
    positions = torch.arange(seq_len, device=inv_freq.device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)  # (S, r/2)
    angles = torch.cat((angles, angles), dim=-1)  # (S, r): dimension i pairs with i + r/2
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first r dims of each head of x (B, nh, S, hs); the rest pass through (Pythia)."""
    r = cos.shape[-1]
    rotated, passed = x[..., :r], x[..., r:]
    first, second = rotated.chunk(2, dim=-1)
    rotate_half = torch.cat((-second, first), dim=-1)  # pairs dimension i with i + r/2, as HF does
    out = rotated * cos + rotate_half * sin
    return out if passed.shape[-1] == 0 else torch.cat((out, passed), dim=-1)


# --------------------------------------------------------------------------------------------------
# The blocks


class CausalSelfAttention(nn.Module):
    """Causal self-attention with a fused q|k|v projection: rows [Q of n_heads | K of kv_heads | V of
    kv_heads], heads contiguous in each. Fewer kv heads than heads is grouped-query attention."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        q_width, kv_width = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
        self.qkv = nn.Linear(config.d_model, q_width + 2 * kv_width, bias=config.qkv_bias)
        self.out_proj = nn.Linear(q_width, config.d_model, bias=config.out_bias)
        self.split = (q_width, kv_width, kv_width)
        if config.qk_norm:  # Qwen3: RMSNorm over each head of q and k, before RoPE
            self.q_norm = make_rms_norm(config, config.head_dim)
            self.k_norm = make_rms_norm(config, config.head_dim)
        self.qk_norm = config.qk_norm
        # None lets SDPA use its default 1/sqrt(head_dim); 1.0 is the no-scale ablation.
        self.scale: float | None = None if config.scale_attention else 1.0

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=2)  # (B, S, nh·hs), 2 x (B, S, nkv·hs)
        q = q.view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, S, hs)
        k = k.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, hs)
        v = v.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, hs)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        grouped = self.kv_heads != self.n_heads  # each kv head serves n_heads / kv_heads query heads
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=grouped)
        y = y.transpose(1, 2).reshape(B, S, self.n_heads * self.head_dim)  # (B, S, nh·hs), heads concatenated
        return self.out_proj(y)


class MLP(nn.Module):
    """d_model -> d_mlp -> GELU -> d_model, or the gated down(silu(gate(x)) * up(x)) (``mlp="swiglu"``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.mlp == "swiglu":
            self.gate = nn.Linear(config.d_model, config.d_mlp, bias=config.mlp_bias)
        self.up = nn.Linear(config.d_model, config.d_mlp, bias=config.mlp_bias)
        self.down = nn.Linear(config.d_mlp, config.d_model, bias=config.mlp_bias)
        self.gated = config.mlp == "swiglu"
        self.gelu_approximate = config.gelu  # "none" (exact erf) or "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            if torch.is_grad_enabled():
                return self.down(F.silu(self.gate(x)) * self.up(x))
            # without autograd: silu in place on the fresh gate projection, times up in place
            return self.down(F.silu(self.gate(x), inplace=True).mul_(self.up(x)))
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

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # Each skip is added in place into the branch output, a fresh tensor that no backward
        # needs: one activation buffer fewer per add. a + h == h + a exactly, so values are unchanged.
        if self.residual == "parallel":  # h' = h + Attn(LN1(h)) + MLP(LN2(h))  (PaLM / GPT-J / NeoX)
            return self.attn(self.ln1(h), rope).add_(h).add_(self.mlp(self.ln2(h)))
        t = self.attn(self.ln1(h), rope).add_(h)  # t = h + Attn(LN1(h))
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
        if config.positions == "learned":
            self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model)
        else:  # RoPE: the frequencies are a function of the config, not weights (float32, on the CPU)
            self.inv_freq = rope_inv_freq(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_final = make_norm(config)
        if not config.tied_head:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
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
        h = self.token_embedding(ids)  # (B, S, d)
        rope = None
        if self.config.positions == "learned":
            h = h.add_(self.position_embedding.weight[: ids.shape[1]])  # rows 0..S-1, no lookup
        else:
            if self.inv_freq.device != ids.device:
                self.inv_freq = self.inv_freq.to(ids.device)
            rope = rope_cos_sin(self.inv_freq, ids.shape[1], h.dtype)  # 2 x (S, r)
        for block in self.blocks:
            h = block(h, rope)
        return F.linear(self.ln_final(h), self.head_weight)  # (B, S, V)

    @property
    def head_weight(self) -> torch.Tensor:
        """The LM head's weight [V, d]: the word embeddings when tied."""
        return self.token_embedding.weight if self.config.tied_head else self.lm_head.weight

    def check_input(self, ids: torch.Tensor) -> None:
        """Raise :class:`InputError` for ids of a shape, dtype or length the model cannot take (no sync)."""
        if ids.dim() != 2:
            raise InputError(f"input ids must have shape [B, S] or [S], got {list(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise InputError(f"input ids must be an integer tensor (torch.long), got {ids.dtype}")
        seq_len = ids.shape[1]
        if seq_len < 1:
            raise InputError("input ids are empty; give at least one token")
        if self.config.max_seq_len >= seq_len > self.config.longest_sequence:
            raise InputError(
                f"sequence length {seq_len} is wider than the model's sliding attention window of "
                f"{self.config.sliding_window} tokens, which the toolkit's model does not implement; "
                "shorten the input"
            )
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
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit norm gains (their own default)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
