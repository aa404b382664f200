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
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if importlib.util.find_spec("transformers") is None:
    sys.exit("bench_load.py needs transformers: run it with 'nox -s bench -- tests/bench/bench_load.py'")

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
        results: dict[str, list[dict[str, float]]] = {"toolkit": [], "transformers": []}
        for round_index in range(args.rounds):
            order = ["toolkit", "transformers"] if round_index % 2 == 0 else ["transformers", "toolkit"]
            for which in order:
                results[which].append(run(which, folder))
    print(f"GPT-2 small HF directory, {weight_bytes / 1e6:,.0f} MB of float32 weights, {args.rounds} rounds")
    medians = {}
    for which, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        q1, _, q3 = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else (seconds[0],) * 3
        medians[which] = statistics.median(seconds)
        growth = statistics.median(r["rss_growth"] for r in runs)
        print(
            f"  {which:<13} load {medians[which] * 1e3:7.0f} ms (IQR {q1 * 1e3:.0f}–{q3 * 1e3:.0f})  "
            f"peak RSS growth {growth / 1e6:6.0f} MB = {growth / weight_bytes:.2f}× the weights"
        )
    ratio = medians["toolkit"] / medians["transformers"]
    growth = statistics.median(r["rss_growth"] for r in results["toolkit"]) / weight_bytes
    verdict = {True: "MET", False: "NOT MET"}
    print(f"  load time ratio toolkit / transformers: {ratio:.2f}× (target ≤ 1.00×: {verdict[ratio <= 1]})")
    print(
        f"  toolkit peak RSS growth / weight bytes: {growth:.2f}× (target ≤ 1.30×: {verdict[growth <= 1.3]})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
