"""Loading a Hugging Face GPT-2 directory of GPT-2 small's shape: toolkit against transformers.

In one run: ``transformers`` writes a random GPT-2 small (vocab 50257, 1024 positions, d 768, 12
heads, 12 layers) with ``save_pretrained``; then each load runs in a fresh interpreter (imports
done before the clock starts), interleaved round by round with ``GPT2LMHeadModel.from_pretrained``
on the same directory. Printed: the median load time of each with its IQR and the ratio (target
toolkit ≤ 1.0× transformers), and the peak RSS growth during the load over the weight bytes
(target ≤ 1.3×: the weights are read once, no second full copy).
Run: ``nox -s bench -- tests/bench/bench_load.py`` (needs transformers) [--rounds N].
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

if importlib.util.find_spec("transformers") is None:
    sys.exit("bench_load.py needs transformers: run it with 'nox -s bench -- tests/bench/bench_load.py'")

from load_timing import compare_loads  # this folder is on sys.path when a bench runs

CHILD = r"""
import json, sys

which, folder, bench_dir = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, bench_dir)
from load_timing import timed_load

if which == "toolkit":
    from toolkit.weights import load_checkpoint
    load = lambda: load_checkpoint(folder)[0]
else:
    from transformers import GPT2LMHeadModel
    load = lambda: GPT2LMHeadModel.from_pretrained(folder)
import torch  # noqa: F401  (both import it; its own allocations are not the load's)

print(json.dumps(timed_load(load)))
"""


def run(which: str, folder: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(folder), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-small"
        model = GPT2LMHeadModel(GPT2Config(bos_token_id=None, eos_token_id=None))
        model.save_pretrained(folder)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        del model
        print(
            f"GPT-2 small HF directory, {weight_bytes / 1e6:,.0f} MB of float32 weights, {args.rounds} rounds"
        )
        compare_loads(lambda which: run(which, folder), args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
