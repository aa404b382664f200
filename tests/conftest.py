"""Shared fixtures: tiny configs so that the suite stays fast on 2 cores."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY

from toolkit import ModelConfig
from toolkit.studies.latency import LatencyResult, measure_latency_sweep
from toolkit.studies.settings import ForwardTiming


@pytest.fixture
def tiny_config() -> ModelConfig:
    """The tiny model config (vocab 61, 32 positions, d 24, 3 heads, 2 layers, d_mlp 40)."""
    return TINY


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same torch seed."""
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped, with the reason, where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sweep() -> LatencyResult:
    """A short layers sweep of the tiny model (1, 2, 4 layers; minimum rounds), shared by the study,
    table and plot tests."""
    timing = ForwardTiming(device=torch.device("cpu"), budget_s=0.0, warmup=1)
    return measure_latency_sweep("layers", TINY, timing, values=[1, 2, 4], matmul_size=64)
