"""Developer sessions: `nox -s tests`, `lint`, `typecheck`, `smoke`, `bench`, `docs` (`nox -l` lists them).

PyTorch is installed first from TOOLKIT_TORCH (default ``torch==2.13.0``, the CPU build on our
machines); set e.g. ``TOOLKIT_TORCH="torch>=2.5"`` to let pip choose a CUDA build instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
TORCH = os.environ.get("TOOLKIT_TORCH", "torch==2.13.0")
SOURCES = ["toolkit", "tests", "noxfile.py", "scripts"]

# The tiny model every smoke run uses (flags shared by the model commands).
TINY = [
    "--vocab",
    "61",
    "--max-seq-len",
    "64",
    "--d-model",
    "24",
    "--heads",
    "3",
    "--layers",
    "2",
    "--mlp",
    "40",
]


def _install(session: nox.Session, extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest; GPU tests skip without CUDA). Extra args go to pytest."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the package, tests and scripts."""
    session.install("ruff>=0.6")
    sources = [s for s in SOURCES if Path(s).exists()]
    session.run("ruff", "check", *sources)
    session.run("ruff", "format", "--check", *sources)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Strict mypy on the toolkit package."""
    _install(session, "dev")
    session.run("mypy")


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """Run every command once on a tiny config, as a user would, from a scratch directory."""
    _install(session, "test")
    session.run("toolkit", "--help")
    session.run("toolkit", "params", *TINY, "--device", "cpu")
    session.run("toolkit", "params", *TINY, "--json")
    session.run("toolkit", "load-weights")
    session.run("toolkit", "latency", *TINY, "--vary", "heads", "--values", "1,3", "--budget", "2")
    session.run("toolkit", "ablate", "--eps", "1e-4", "--seq-len", "64", "--budget", "3")
    session.run("toolkit", "layernorm-compare", "--shapes", "256x64", "--steps", "5", "--budget", "2")
    session.run("toolkit", "matmul", "--size", "64", "--repeat", "1", "--workers", "2")
    session.run("python", "scripts/make_checkpoints.py", str(session.create_tmp() + "/checkpoints"))
    for checkpoint in ("gpt2-hf", "nanogpt/ckpt.pt"):
        path = f"{session.create_tmp()}/checkpoints/{checkpoint}"
        session.run("toolkit", "load-weights", "--weights", path)
        session.run("toolkit", "ablate", "--weights", path, "--eps", "1e-4", "--no-latency", "--no-plot")
    smollm = f"{session.create_tmp()}/checkpoints/smollm-hf"
    examples = f"{session.create_tmp()}/checkpoints/smollm-examples.safetensors"
    session.run("toolkit", "params", "--weights", smollm, "--seq-len", "128")
    session.run("toolkit", "load-weights", "--weights", smollm, "--examples", examples)
    session.run(
        "toolkit", "latency", "--weights", smollm, "--vary", "kv-heads", "--seq-len", "64", "--budget", "2"
    )
    session.run("toolkit", "ablate", "--weights", smollm, "--examples", examples, "--rope-theta", "10000",
                "--no-latency", "--no-plot")  # fmt: skip


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks that time ours and the reference side by side in one run and print the ratio.

    Give file names to run a subset: `nox -s bench -- tests/bench/bench_model.py`.
    """
    _install(session, "test")
    scripts = session.posargs or sorted(str(p) for p in Path("tests/bench").glob("bench_*.py"))
    for script in scripts:
        session.run("python", script)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Rewrite docs/<command>.md from real runs of every command (a few minutes on 2 cores)."""
    _install(session, "test")
    session.run("python", "scripts/make_docs.py", *session.posargs)
