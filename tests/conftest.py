"""Shared fixtures: tiny configs so that the suite stays fast on 2 cores."""

from __future__ import annotations

import pytest
import torch

from toolkit import ModelConfig

TINY = ModelConfig(vocab_size=61, max_seq_len=32, d_model=24, n_heads=3, n_layers=2, d_mlp=40)


@pytest.fixture
def tiny_config() -> ModelConfig:
    return TINY


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped, with the reason, where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
