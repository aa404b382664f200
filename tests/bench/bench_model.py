"""Issue 2's performance target: the default model's forward pass against transformers' GPT-2 (SDPA).

Default config, S=1024, B=1, float32, CPU. Three arms timed interleaved in one process by
``toolkit.timing.compare``: the toolkit model, ``GPT2LMHeadModel(attn_implementation="sdpa")``
holding the same weights (called with ``use_cache=False``: the same computation, no KV cache), and
a 1024×1024 fp32 matmul, the machine's matmul rate measured in the same run.

Targets: toolkit median / HF median ≤ 1.00; achieved rate (analytic FLOP, full-attention
convention) ≥ 90% of the matmul rate. Run: ``nox -s bench -- tests/bench/bench_model.py`` (which
installs ``transformers``), or ``python tests/bench/bench_model.py [--budget S]`` where it is installed.

A fourth arm, "products only", runs just the forward pass's matrix products (no bias) and its SDPA
calls on inputs of the same shapes: the rate eager PyTorch reaches when nothing else runs. The gap
between it and the model is the element-wise work (biases, LayerNorm, GELU, residual adds), which
eager mode cannot fuse into the products.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if importlib.util.find_spec("transformers") is None:
    sys.exit(
        "bench_model.py needs transformers, the GPT-2 it times against: run it with "
        "'nox -s bench -- tests/bench/bench_model.py', or pip install -e '.[dev]' first"
    )
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for reference.py

from reference import copy_hf_into_toolkit, hf_gpt2, randomize_

from toolkit import ModelConfig, Transformer
from toolkit.device import device_name
from toolkit.flops import FLOP_CONVENTION, forward_flops, matmul_operands
from toolkit.tables.timing import caution_text
from toolkit.timing import TimingContext, compare, configure_allocator

SEQ_LEN, BATCH, MATMUL_N = 1024, 1, 1024


def ratio_of_medians_ci(ours: np.ndarray, theirs: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% paired bootstrap CI of median(ours) / median(theirs), resampling whole rounds."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ours.size, size=(2000, ours.size))
    ratios = np.median(ours[idx], axis=1) / np.median(theirs[idx], axis=1)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def products_only(model: Transformer, batch: int, seq_len: int) -> Callable[[], None]:
    """The model's matrix products (without bias) and SDPA calls, on fixed inputs of their shapes."""
    config = model.config
    d, heads = config.d_model, config.n_heads
    x = torch.randn(batch, seq_len, d)
    hidden = torch.randn(batch, seq_len, config.d_mlp)

    def run() -> None:
        for block in model.blocks:
            q, k, v = (
                t.view(batch, seq_len, heads, d // heads).transpose(1, 2)
                for t in F.linear(x, block.attn.qkv.weight).split(d, dim=2)
            )
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
            F.linear(x, block.attn.out_proj.weight)
            F.linear(x, block.mlp.up.weight)
            F.linear(hidden, block.mlp.down.weight)
        F.linear(x, model.token_embedding.weight)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of interleaved timing")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = configure_allocator()
    cpu = torch.device("cpu")
    config = ModelConfig()
    hf = hf_gpt2(config, attn_implementation="sdpa")
    randomize_(hf, seed=0)
    model = Transformer(config).eval()
    copy_hf_into_toolkit(hf, model)
    ids = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        gap = (model(ids) - hf(ids, use_cache=False).logits).abs().max().item()
    a, b = matmul_operands(cpu, torch.float32, MATMUL_N)
    out = torch.empty_like(a)

    result = compare(
        {
            "hf-gpt2-sdpa": lambda: hf(ids, use_cache=False),
            "toolkit": lambda: model(ids),
            "matmul": lambda: torch.mm(a, b, out=out),
            "products only": products_only(model, BATCH, SEQ_LEN),
        },
        baseline="hf-gpt2-sdpa",
        device=cpu,
        budget_s=args.budget,
        target_rel_ci=0.01,
        min_rounds=15,
        context=TimingContext.capture(cpu, torch.float32, batch=BATCH, seq_len=SEQ_LEN),
    )
    ours, theirs = result.measurements["toolkit"], result.measurements["hf-gpt2-sdpa"]
    matmul = result.measurements["matmul"]
    ratio = ours.median_ms / theirs.median_ms
    low, high = ratio_of_medians_ci(np.asarray(ours.samples_ms), np.asarray(theirs.samples_ms))
    flops = forward_flops(config, BATCH, SEQ_LEN).total
    achieved = flops / (ours.median_ms * 1e-3) / 1e9
    ceiling = flops / (result.measurements["products only"].median_ms * 1e-3) / 1e9
    peak = 2 * MATMUL_N**3 / (matmul.median_ms * 1e-3) / 1e9
    paired = result.differences["toolkit"]

    print(f"device: {device_name(cpu)}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"allocator: {allocator}")
    print(f"default config, S={SEQ_LEN}, B={BATCH}, float32; max |logit difference| toolkit vs HF: {gap:.1e}")
    print(f"{result.rounds} interleaved rounds in {result.elapsed_s:.1f} s (stop: {result.stop_reason})")
    for name, m in result.measurements.items():
        print(
            f"  {name:<22} median {m.median_ms:8.2f} ms  IQR {m.iqr_ms:6.2f} ms  "
            f"95% CI {m.ci_low_ms:.2f}-{m.ci_high_ms:.2f} ms  page faults/call {m.page_faults_per_call:.1f}"
        )
    print(f"noise floor (A/A control): ±{result.noise_floor_pct:.2f}%")
    print(
        f"ratio of medians toolkit / HF: {ratio:.3f} (95% CI {low:.3f}-{high:.3f}); paired per-round "
        f"{paired.diff_pct:+.2f}% (CI {paired.ci_low_pct:+.2f}%..{paired.ci_high_pct:+.2f}%, "
        f"{'significant' if paired.significant else 'not significant'})"
    )
    print(f"  target <= 1.00: {'met' if ratio <= 1.0 else 'NOT met'}")
    print(f"achieved {achieved:.1f} GFLOP/s ({flops / 1e9:.3f} GFLOP per forward; {FLOP_CONVENTION})")
    print(f"matmul rate {peak:.1f} GFLOP/s ({MATMUL_N}^3 fp32, same run)")
    print(
        f"  achieved / matmul rate = {100 * achieved / peak:.1f}%, target >= 90%: "
        f"{'met' if achieved >= 0.9 * peak else 'NOT met'}"
    )
    print(
        f"products only (matmuls + SDPA, no element-wise work): {ceiling:.1f} GFLOP/s = "
        f"{100 * ceiling / peak:.1f}% of the matmul rate; element-wise work costs "
        f"{ours.median_ms - result.measurements['products only'].median_ms:.1f} ms of the model's "
        f"{ours.median_ms:.1f} ms"
    )
    for caution in result.cautions():
        print(f"warning: {caution_text(caution)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
