"""`toolkit ablate --train` as users run it: the JSON of a tiny comparison, the plot, the refusals, and the
same per-seed losses from 2 gloo ranks under torchrun as from one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_checks import assert_one_line_error
from typer.testing import CliRunner

from toolkit.cli import app

runner = CliRunner()
WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
TRAIN_KEYS = {"final_loss_mean", "delta_nats", "ci95", "significant", "seeds", "steps_to_base_loss",
              "tokens_per_s", "diverged"}  # fmt: skip


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 kB of the shipped held-out text (training: the first 90% of its tokens)."""
    path = tmp_path_factory.mktemp("train") / "text.txt"
    path.write_text((WEIGHTS / "heldout.txt").read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    return path


def tiny_args(text: Path, *extra: str) -> list[str]:
    return [
        "ablate", "--train", "--device", "cpu", "--text", str(text),
        "--tokenizer", str(WEIGHTS / "tokenizer.json"), "--d-model", "16", "--layers", "1", "--heads", "2",
        "--mlp", "32", "--seq-len", "16", "--tokens-per-step", "64", "--steps", "6", "--seeds", "2", *extra,
    ]  # fmt: skip


def run_json(args: list[str]) -> dict[str, Any]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_train_json_has_every_row_and_the_base(text: Path, tmp_path: Path) -> None:
    plot = tmp_path / "training.png"
    data = run_json(tiny_args(text, "--norm", "rms", "--position", "rope", "--kv-heads", "1", "--json",
                              "--plot", str(plot)))  # fmt: skip
    assert [row["change"] for row in data["rows"]] == ["norm rms", "position rope", "kv-heads 1"]
    for row in data["rows"]:
        assert set(row["train"]) >= TRAIN_KEYS
        train = row["train"]
        assert set(train["seeds"]) == {"0", "1"}
        assert train["ci95"][0] <= train["delta_nats"] <= train["ci95"][1]
        assert train["delta_nats"] == pytest.approx(
            train["final_loss_mean"] - data["train_base"]["final_loss_mean"]
        )
        assert row["verdict"]
    assert TRAIN_KEYS - {"delta_nats", "ci95", "significant"} <= set(data["train_base"])
    assert data["recipe"]["tokens_per_step"] == 64
    assert data["recipe"]["seq_len"] == 16
    assert data["interrupted"] is False
    assert plot.stat().st_size > 0


def test_train_on_the_default_text_prints_the_tables(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["ablate", "--train", "--device", "cpu", "--d-model", "16", "--layers", "1", "--mlp", "32",
         "--seq-len", "16", "--tokens-per-step", "64", "--steps", "3", "--seeds", "2",
         "--residual", "parallel", "--plot", str(tmp_path / "p.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Trained from scratch" in result.stdout
    assert "residual parallel" in result.stdout
    assert "Verdict" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ablate", "--position", "rope", "--no-latency"], "--train"),
        (["ablate", "--kv-heads", "1", "--no-latency"], "--train"),
        (["ablate", "--steps", "10", "--no-latency"], "--train"),
        (["ablate", "--train", "--weights", "weights/reference_model.safetensors"], "--weights"),
        (["ablate", "--train", "--tokens-per-step", "8", "--seq-len", "16"], "--tokens-per-step"),
        (["ablate", "--train", "--kv-heads", "3"], "n_kv_heads"),
        (["ablate", "--train", "--ffn", "gelu"], "unchanged"),
        (["ablate", "--train", "--batch", "8"], "--tokens-per-step"),
        (["ablate", "--train", "--dtype", "bfloat16"], "--dtype"),
    ],
)
def test_bad_training_input_is_one_line(args: list[str], fragment: str) -> None:
    assert_one_line_error(runner.invoke(app, args), fragment)


def test_norm_rms_without_train_says_to_add_it() -> None:
    assert_one_line_error(runner.invoke(app, ["ablate", "--norm", "rms", "--no-latency"]), "--train")


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun"
)
def test_two_gloo_ranks_give_the_losses_of_one_process(text: Path, tmp_path: Path) -> None:
    args = tiny_args(text, "--eps", "1e-3", "--no-plot", "--json", "--seeds", "3")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's default per rank: the same arithmetic alone
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    spread = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "toolkit", *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert spread.returncode == 0, spread.stderr
    single = subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert single.returncode == 0, single.stderr
    spread_data, single_data = json.loads(spread.stdout), json.loads(single.stdout)
    assert spread_data["ranks"] == 2
    assert single_data["ranks"] == 1
    assert spread_data["train_base"]["seeds"] == single_data["train_base"]["seeds"]
    assert spread_data["rows"][0]["train"]["seeds"] == single_data["rows"][0]["train"]["seeds"]


@pytest.mark.cuda
def test_train_on_cuda_gives_the_same_kind_of_result(text: Path) -> None:
    data = run_json(tiny_args(text, "--device", "cuda", "--kv-heads", "1", "--no-plot", "--json"))
    assert "cpu" not in data["device"].lower()
    train = data["rows"][0]["train"]
    assert set(train["seeds"]) == {"0", "1"}
    assert all(value > 0 for value in train["seeds"].values())
