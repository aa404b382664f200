"""Write docs/<command>.md: each command's page with the real output of the runs it shows.

Every figure in docs/ comes from running the commands here, so none can go stale: rerun this script
(``nox -s docs``) after a change. Usage: ``python scripts/make_docs.py [--only params,matmul]``.
Runs from the repository root (the shipped weights/ are found there); takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Page:
    """One command's page: what it answers, and the runs that show it."""

    command: str
    question: str
    intro: str
    runs: tuple[str, ...]


PAGES = (
    Page(
        "params",
        "How big is the model, and what RAM does it really take?",
        "Parameters per component (the tied LM head counted once), weight bytes per dtype, and memory "
        "measured, not computed: the resident set's growth when the model is built and the peak of one "
        "forward pass (the kernel's resettable peak-RSS counter on Linux; CUDA's allocator peak on a GPU). "
        "The KV cache per token and at the model's full context. A Hugging Face config.json of any "
        "supported family (here Llama-3.2-1B's, as the Hub holds it) is counted without its weights.",
        (
            "toolkit params --device cpu",
            "toolkit params --no-measure --json",
            "toolkit params --config tests/data/hub_configs/llama-3.2-1b.json --no-measure",
        ),
    ),
    Page(
        "load-weights",
        "Can I load someone else's checkpoint, and prove it reproduces their outputs?",
        "The checkpoint's keys are matched against a readable mapping (weights/keys_mapping.json), its "
        "sizes are read off the shapes, and the head count, which no shape records, is found by trying "
        "every divisor of d_model against the reference logits. Exit 0: every example is reproduced; "
        "1: some are not; 2: bad input.",
        ("toolkit load-weights", "toolkit load-weights --heads 4"),
    ),
    Page(
        "latency",
        "What makes the forward pass slow?",
        "One parameter is swept around the fixed config; every value is timed interleaved with the "
        "others and with a square matmul (the machine's rate now), so a busy machine slows every value "
        "alike. Medians carry 95% bootstrap CIs; the trend is fitted (linear, quadratic for sequence "
        "length, and the log-log exponent).",
        ("toolkit latency --vary heads --values 1,2,4,8 --budget 2 --no-plot",),
    ),
    Page(
        "ablate",
        "What does an architecture change do to the outputs, and to the speed?",
        "Each variant gets exactly the base weights (the shipped model is trained on real text). Output "
        "change is base minus variant over all logits of the examples, in float64 (a change below the "
        "base model's own float32 noise is marked); next-token loss is scored on the held-out text, "
        "paired window by window; latency is timed interleaved with the baseline and an A/A control "
        "(the baseline's architecture as an arm of its own), every arm reading the same copy of the "
        "weights. Verdicts are Holm-adjusted over the variants and each states the smallest change the "
        "run could detect. With --train, the changes only training can judge (RMSNorm, RoPE, the gated "
        "MLP, fewer kv heads) are trained from scratch with the base over 3 seeds and judged seed by "
        "seed (docs/reference.md, 'What a change does to training').",
        (
            "toolkit ablate --no-plot",
            "toolkit ablate --seq-len 64 --budget 10 --no-text-loss --no-plot",
            "toolkit ablate --train --norm rms --position rope --ffn swiglu --kv-heads 1 --no-plot",
        ),
    ),
    Page(
        "layernorm-compare",
        "Does my LayerNorm match PyTorch's, and what does it cost?",
        "Numerics against a float64 reference (including a large mean offset, where a one-pass variance "
        "fails), speed and achieved bandwidth against a plain copy timed in the same run, bytes saved "
        "for backward, and a small byte-level GPT trained with each normalisation over 3 seeds, each judged "
        "against torch's LayerNorm seed by seed. --norm rms studies the "
        "custom RMSNorm against torch.nn.RMSNorm the same way, torch's LayerNorm timed beside it.",
        (
            "toolkit layernorm-compare --device cpu --shapes 4096x256,8192x1024 --budget 2 "
            "--steps 60 --no-plot",
            "toolkit layernorm-compare --norm rms --device cpu --shapes 4096x256,8192x1024 --budget 2 "
            "--no-train --no-plot",
        ),
    ),
    Page(
        "matmul",
        "How does a matrix product split across processes, and what does the split cost?",
        "C = A @ B on worker processes sharing A, B and C, timed against NumPy's own multi-threaded "
        "product and against one process, and verified against a plain product (bit-identical for "
        "integers, within the rounding bound for floats).",
        (
            "toolkit matmul --size 1024 --workers 2 --repeat 5",
            "toolkit matmul --size 256 --dtype int64 --split grid",
        ),
    ),
)


def run(command: str) -> tuple[str, int, float]:
    """Run ``command`` (a toolkit command line) here; its output, exit status and wall time."""
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    args = [sys.executable, "-m", "toolkit", *command.split()[1:]]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).rstrip(), done.returncode, time.perf_counter() - start


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def write_page(page: Page, where: str) -> Path:
    parts = [
        f"# `toolkit {page.command}`: {page.question}",
        "",
        page.intro,
        "",
        f"*Generated by `python scripts/make_docs.py` on {datetime.date.today()} ({where}); every output "
        "below is real. Run `toolkit " + page.command + " --help` for all options.*",
    ]
    for command in page.runs:
        output, status, seconds = run(command)
        parts += ["", f"```console\n$ {command}\n{output}\n```", f"(exit status {status}, {seconds:.0f} s)"]
    target = DOCS / f"{page.command}.md"
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated commands, e.g. params,matmul")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else {page.command for page in PAGES}
    DOCS.mkdir(exist_ok=True)
    where = machine()
    for page in PAGES:
        if page.command in wanted:
            print(f"wrote {write_page(page, where)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
