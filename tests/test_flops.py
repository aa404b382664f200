"""The analytic FLOP count against torch.utils.flop_counter on GPT-2 with eager attention."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from reference import hf_gpt2
from tiny import TINY
from torch.utils.flop_counter import FlopCounterMode

from toolkit import ModelConfig
from toolkit.flops import FLOP_CONVENTION, forward_flops, matmul_operands, matmul_rate_gflops

CPU = torch.device("cpu")

CONFIGS = [
    TINY,
    ModelConfig(vocab_size=100, max_seq_len=64, d_model=32, n_heads=1, n_layers=1, d_mlp=128),
    ModelConfig(vocab_size=37, max_seq_len=16, d_model=48, n_heads=8, n_layers=3, d_mlp=20),
]


@pytest.mark.parametrize(
    ("config", "batch", "seq_len"), list(zip(CONFIGS, (1, 3, 2), (16, 7, 16), strict=True))
)
def test_forward_flops_match_flop_counter_on_eager_gpt2(
    config: ModelConfig, batch: int, seq_len: int
) -> None:
    """Every matmul of GPT-2 (eager attention, full S×S products) counted by torch equals ours."""
    model = hf_gpt2(config, attn_implementation="eager")
    ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids)
    assert forward_flops(config, batch, seq_len).total == counter.get_total_flops()


def test_forward_flops_components_and_defaults() -> None:
    """The default config at S=1024: closed-form totals per component; the default length is max_seq_len."""
    config = ModelConfig()
    count = forward_flops(config)
    tokens, d, L = 1024, 256, 3
    assert count.seq_len == 1024
    assert count.batch == 1
    assert count.attention == L * 4 * 1024 * 1024 * d
    assert count.mlp_up == count.mlp_down == L * 2 * tokens * d * 1280
    assert count.lm_head == 2 * tokens * d * 512
    assert count.total == 2 * tokens * (L * (3 * d * d + d * d + 2 * d * 1280) + d * 512) + count.attention
    assert count.per_token == count.total / tokens
    assert count.to_dict()["convention"] == FLOP_CONVENTION
    assert "full S×S" in FLOP_CONVENTION


def test_matmul_rate_is_positive() -> None:
    """The machine's matmul rate is a finite positive number of GFLOP/s."""
    rate = matmul_rate_gflops(CPU, torch.float32, size=64, budget_s=0.05)
    assert math.isfinite(rate)
    assert rate > 0
    # The rate is 2·n³ FLOP over the median time of that product, timed here independently.
    a, b = matmul_operands(CPU, torch.float32, 64)
    assert a.shape == b.shape == (64, 64)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    independent = 2 * 64**3 / float(np.median(times)) / 1e9
    assert independent / 20 < rate < independent * 20  # same order of magnitude on a noisy machine
