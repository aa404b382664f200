"""The model families' performance targets: a SmolLM2-135M-shaped Llama against transformers.

1. Forward: the SmolLM2-135M shape (vocab 49152, d 576, 9 heads sharing 3 kv heads, 30 layers, d_mlp
   1536, RoPE theta 1e5, tied head) with random weights, S=512, B=1, float32, CPU. The toolkit model
   loaded from the directory and ``LlamaForCausalLM(attn_implementation="sdpa")`` holding the same
   weights (called with ``use_cache=False``) are timed interleaved in one process by
   ``toolkit.timing.compare``. Target: toolkit median / transformers median ≤ 0.95. Then, under
   torch.profiler, the share of each forward spent in the kernels both models call with the same
   shapes (``aten::mm``, the CPU flash-attention kernel): only the rest can differ.
2. Loading the same model's directory stored in bfloat16 (as on the Hub) into bfloat16, each load
   in a fresh interpreter, interleaved with ``LlamaForCausalLM.from_pretrained(dtype=torch.bfloat16)``:
   the load time ratio (target ≤ 1.0×) and the toolkit's peak RSS growth over the loaded weights
   (target ≤ 1.3×). The same into float32 (both convert) is printed beside it.

Run: ``nox -s bench -- tests/bench/bench_families.py`` (installs transformers) [--budget S --rounds N].
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

if importlib.util.find_spec("transformers") is None:
    sys.exit(
        "bench_families.py needs transformers: run it with 'nox -s bench -- tests/bench/bench_families.py'"
    )

from bench_model import ratio_of_medians_ci  # this folder is on sys.path when a bench runs
from load_timing import compare_loads

from toolkit.device import device_name
from toolkit.timing import TimingContext, compare, configure_allocator
from toolkit.weights import load_checkpoint

SEQ_LEN, BATCH = 512, 1
SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
    "tie_word_embeddings": True,
    "bos_token_id": None,
    "eos_token_id": None,
}

CHILD = r"""
import json, sys

which, folder, dtype_name, bench_dir = sys.argv[1:5]
sys.path.insert(0, bench_dir)
from load_timing import timed_load
import torch

dtype = getattr(torch, dtype_name)
if which == "toolkit":
    from toolkit.weights import load_checkpoint
    load = lambda: load_checkpoint(folder, dtype=dtype)[0]
else:
    from transformers import LlamaForCausalLM
    load = lambda: LlamaForCausalLM.from_pretrained(folder, dtype=dtype)
print(json.dumps(timed_load(load)))
"""


def forward(folder: Path, budget_s: float) -> None:
    from transformers import LlamaForCausalLM

    cpu = torch.device("cpu")
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    model, _ = load_checkpoint(folder)
    ids = torch.randint(
        0, SMOLLM2_135M["vocab_size"], (BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        gap = (model(ids) - hf(ids, use_cache=False).logits).abs().max().item()
    result = compare(
        {"transformers-llama-sdpa": lambda: hf(ids, use_cache=False), "toolkit": lambda: model(ids)},
        baseline="transformers-llama-sdpa",
        device=cpu,
        budget_s=budget_s,
        target_rel_ci=0.01,
        min_rounds=15,
        context=TimingContext.capture(cpu, torch.float32, batch=BATCH, seq_len=SEQ_LEN),
    )
    ours, theirs = result.measurements["toolkit"], result.measurements["transformers-llama-sdpa"]
    ratio = ours.median_ms / theirs.median_ms
    low, high = ratio_of_medians_ci(np.asarray(ours.samples_ms), np.asarray(theirs.samples_ms))
    print(f"device: {device_name(cpu)}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"SmolLM2-135M shape, S={SEQ_LEN}, B={BATCH}, float32; max |logit difference| toolkit vs HF: "
        f"{gap:.1e}"
    )
    print(f"{result.rounds} interleaved rounds in {result.elapsed_s:.1f} s (stop: {result.stop_reason})")
    for name, m in result.measurements.items():
        print(
            f"  {name:<24} median {m.median_ms:8.2f} ms  IQR {m.iqr_ms:6.2f} ms  "
            f"95% CI {m.ci_low_ms:.2f}-{m.ci_high_ms:.2f}"
        )
    print(f"noise floor (A/A control): ±{result.noise_floor_pct:.2f}%")
    print(f"forward ratio of medians toolkit / transformers: {ratio:.3f} (95% CI {low:.3f}-{high:.3f})")
    print(f"  target <= 0.95: {'MET' if ratio <= 0.95 else 'NOT MET'}")
    shared_kernel_shares(
        {"transformers-llama-sdpa": lambda: hf(ids, use_cache=False), "toolkit": lambda: model(ids)}
    )


SHARED_KERNELS = ("aten::mm", "aten::_scaled_dot_product_flash_attention_for_cpu")


def shared_kernel_shares(fns: dict[str, Callable[[], object]], calls: int = 3) -> None:
    """Under torch.profiler, the share of each forward's operator time spent in the matrix products and
    the attention kernel, which both models call with the same shapes: the rest is all a faster
    implementation can save."""
    print("share of operator time in the kernels both call (aten::mm, CPU flash attention), torch.profiler:")
    with torch.inference_mode():
        for name, fn in fns.items():
            fn()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                for _ in range(calls):
                    fn()
            events = profile.key_averages()
            total = sum(event.self_cpu_time_total for event in events)
            shared = sum(event.self_cpu_time_total for event in events if event.key in SHARED_KERNELS)
            print(
                f"  {name:<24} {100 * shared / total:5.1f}% of {total / 1e3 / calls:7.1f} ms per forward; "
                f"the rest {(total - shared) / 1e3 / calls:6.1f} ms"
            )


def run_child(which: str, folder: Path, dtype: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(folder), dtype, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def loading(folder: Path, rounds: int, dtype: str) -> None:
    print(f"loading the bfloat16 directory into {dtype}, {rounds} rounds, each load in a fresh interpreter")
    compare_loads(lambda which: run_child(which, folder, dtype), rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds of interleaved forward timing (0: none)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="loads of each (0: none)")
    args = parser.parse_args()
    print(f"allocator: {configure_allocator()}")
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smollm2-135m-shape"
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
        model.to(torch.bfloat16).save_pretrained(folder)
        del model
        if args.budget > 0:
            forward(folder, args.budget)
        for dtype in ("bfloat16", "float32") if args.rounds > 0 else ():
            loading(folder, args.rounds, dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
