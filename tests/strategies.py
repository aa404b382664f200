"""Hypothesis strategies shared by the property tests: LayerNorm and RMSNorm inputs, block-product shapes."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from toolkit.layernorm import available_backends
from toolkit.matmul.plans import SPLITS

CPU_BACKENDS = available_backends("cpu")

dims = st.integers(min_value=1, max_value=23)
"""One matrix dimension of a block product (N, K or M)."""
worker_counts = st.integers(min_value=1, max_value=9)
splits = st.sampled_from(SPLITS)


@st.composite
def layer_norm_cases(draw: st.DrawFn) -> dict[str, Any]:
    """An input of 0-2 leading dims and 1-2 normalised dims, a dtype, an offset and affine options."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    normalized = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=2)))
    if draw(st.booleans()):
        normalized = (draw(st.integers(1, 600)),)
    leading = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=2)))
    offsets = [0.0, 3.0] if dtype == torch.bfloat16 else [0.0, 100.0, 1000.0]
    return {
        "dtype": dtype,
        "shape": leading + normalized,
        "normalized": normalized,
        "offset": draw(st.sampled_from(offsets)),
        "scale": draw(st.sampled_from([1.0, 1e-3, 50.0])),
        "affine": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "backend": draw(st.sampled_from(CPU_BACKENDS)),
        "seed": draw(st.integers(0, 2**16)),
    }


@st.composite
def rms_norm_cases(draw: st.DrawFn) -> dict[str, Any]:
    """An input of 0-2 leading dims and 1-2 normalised dims, a dtype, an offset, a weight or none."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]))
    normalized = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=2)))
    if draw(st.booleans()):
        normalized = (draw(st.integers(1, 600)),)
    leading = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=2)))
    half = dtype in (torch.bfloat16, torch.float16)
    return {
        "dtype": dtype,
        "shape": leading + normalized,
        "normalized": normalized,
        "offset": draw(st.sampled_from([0.0, 3.0] if half else [0.0, 100.0, 1000.0])),
        "scale": draw(st.sampled_from([1.0, 1e-2, 50.0] if half else [1.0, 1e-3, 50.0])),
        "affine": draw(st.booleans()),
        "eps": draw(st.sampled_from([None, 1e-5, 1e-6])),
        "backend": draw(st.sampled_from(CPU_BACKENDS)),
        "seed": draw(st.integers(0, 2**16)),
    }
