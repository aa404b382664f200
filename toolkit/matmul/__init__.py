"""The parallel matrix product: the naive reference, block plans, shared arrays, the process pool,
verification, and the torch.distributed backend. ``toolkit.studies.matmul`` puts them together.

Nothing here imports PyTorch (workers stay light); :mod:`toolkit.matmul.distributed` does, lazily.
"""

from toolkit.matmul.kernels import blas_kernel, naive_kernel, naive_matmul
from toolkit.matmul.plans import SPLITS, BlockPlan, ProductTask, Span, execute_plan, make_plan

__all__ = [
    "SPLITS",
    "BlockPlan",
    "ProductTask",
    "Span",
    "blas_kernel",
    "execute_plan",
    "make_plan",
    "naive_kernel",
    "naive_matmul",
]
