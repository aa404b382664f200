"""How long the command line takes to answer, against the floor of importing Typer and Rich.

Each command is a fresh interpreter, timed interleaved with the floor (``python -c "import typer,
rich.console"``) so that a busy machine slows both alike. Printed: the median and interquartile
range of each, and the ratio of medians. ``toolkit --help`` should sit near the floor (it imports
no numerical library); ``toolkit params`` pays for PyTorch once, as it must. Target (issue 24,
with the newest Typer, whose options are coerced through pydantic): ``toolkit --help`` and an
argument error below 2.5× the floor.
Run: ``python tests/bench/bench_startup.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

FLOOR = [sys.executable, "-c", "import typer, rich.console"]
TARGET_RATIO = 2.5
TARGETED = ("toolkit --help", "toolkit params --heads 3 (error)")  # the commands the target names
COMMANDS = {
    "toolkit --help": [sys.executable, "-m", "toolkit", "--help"],
    "toolkit ablate --help": [sys.executable, "-m", "toolkit", "ablate", "--help"],
    "toolkit params --heads 3 (error)": [sys.executable, "-m", "toolkit", "params", "--heads", "3"],
    "toolkit params --heads 4": [sys.executable, "-m", "toolkit", "params", "--heads", "4"],
}


def _seconds(argv: list[str]) -> float:
    begin = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - begin


def _spread(samples: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return f"{median * 1e3:7.0f} ms (IQR {q1 * 1e3:.0f}–{q3 * 1e3:.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per command")
    args = parser.parse_args()
    _seconds(FLOOR)  # warm the file cache
    import typer

    print(f"start-up, {args.rounds} interleaved rounds each; typer {typer.__version__}")
    for name, argv in COMMANDS.items():
        _seconds(argv)
        floor, ours = [], []
        for _ in range(args.rounds):
            floor.append(_seconds(FLOOR))
            ours.append(_seconds(argv))
        ratio = statistics.median(ours) / statistics.median(floor)
        verdict = ""
        if name in TARGETED:
            verdict = f"   target < {TARGET_RATIO}×: {'MET' if ratio < TARGET_RATIO else 'NOT MET'}"
        print(f"  {name:<26} {_spread(ours)}   floor {_spread(floor)}   ratio {ratio:.2f}×{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
