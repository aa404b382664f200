"""The custom LayerNorm: a drop-in for ``torch.nn.LayerNorm`` with a hand-derived backward.

- ``backends``: what both norms share: backend choice (``torch-ops``, ``numba``, ``triton``), the
  compute dtype, kernel operands, input checks.
- ``module``: the autograd function, the ``layer_norm`` functional, the ``LayerNorm`` module, and
  ``FeatureBatchNorm`` for the training study.
- ``rms``: the custom RMSNorm (``rms_norm``, ``RMSNorm``, ``RMSNormFunction``): the same backends.
- ``numba_kernels``: the CPU kernels (imported when first needed).
- ``triton_kernels``: the CUDA kernels (imported only when a CUDA tensor arrives).
"""

from __future__ import annotations

from toolkit.layernorm.module import (
    BACKENDS,
    FeatureBatchNorm,
    LayerNorm,
    LayerNormFunction,
    available_backends,
    layer_norm,
    resolve_backend,
)
from toolkit.layernorm.rms import RMSNorm, RMSNormFunction, rms_norm

__all__ = [
    "BACKENDS",
    "FeatureBatchNorm",
    "LayerNorm",
    "LayerNormFunction",
    "RMSNorm",
    "RMSNormFunction",
    "available_backends",
    "layer_norm",
    "resolve_backend",
    "rms_norm",
]
