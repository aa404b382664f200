"""Next-token loss on real text through the CLI: load-weights' `text`, ablate's `text_loss`, bad input.

The checkpoints are Hugging Face GPT-2 directories written by ``transformers`` in the test, with a
tokenizer trained by ``tokenizers``; expected losses are computed by GPT-2 itself in float64.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_checks import assert_one_line_error
from reference import hf_gpt2, randomize_
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2LMHeadModel
from typer.testing import CliRunner

from toolkit import ModelConfig
from toolkit.cli import app
from toolkit.text import train_bpe

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
HELDOUT = ROOT / "weights" / "heldout.txt"
CONFIG = ModelConfig(vocab_size=300, max_seq_len=64, d_model=32, n_heads=2, n_layers=1, d_mlp=64)
TEXT_KEYS = {"tokens", "loss_nats", "perplexity", "unigram_nats", "path", "tokenizer", "windows", "window"}
LOSS_KEYS = {"base_nats", "variant_nats", "delta_nats", "ci_low", "ci_high", "significant"}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An HF GPT-2 directory without a tokenizer, one with its tokenizer.json, GPT-2-style tokenizer
    files in a folder of their own, and a text sample."""
    root = tmp_path_factory.mktemp("text")
    heldout = HELDOUT.read_text(encoding="utf-8")
    bpe = train_bpe([heldout[:60_000]], CONFIG.vocab_size)
    hf = hf_gpt2(CONFIG)
    randomize_(hf, seed=5)
    paths = {name: root / name for name in ("bare", "with_tokenizer", "tokenizer", "big_tokenizer")}
    for name in ("bare", "with_tokenizer"):
        hf.save_pretrained(paths[name])
    bpe.save(str(paths["with_tokenizer"] / "tokenizer.json"))
    paths["tokenizer"].mkdir()
    bpe.model.save(str(paths["tokenizer"]))  # vocab.json + merges.txt
    paths["big_tokenizer"] = root / "big.json"
    train_bpe([heldout[:60_000]], CONFIG.vocab_size + 40).save(str(paths["big_tokenizer"]))
    paths["text"] = root / "sample.txt"
    paths["text"].write_text(heldout[100_000:112_000], encoding="utf-8")
    return paths


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def gpt2_loss(checkpoint: Path, tokenizer_dir: Path, text: str, window: int) -> tuple[float, float, int]:
    """GPT-2's own mean next-token loss (float64) on the text's windows, its unigram entropy, tokens."""
    bpe = Tokenizer(
        models.BPE.from_file(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"))
    )
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    ids = np.array(bpe.encode(text).ids)
    n = (ids.size - 1) // window
    rows = torch.from_numpy(np.stack([ids[i * window : i * window + window + 1] for i in range(n)]))
    hf = GPT2LMHeadModel.from_pretrained(checkpoint).double().eval()
    with torch.no_grad():
        log_p = torch.log_softmax(hf(rows[:, :-1]).logits, dim=-1)
    nll = -log_p.gather(-1, rows[:, 1:, None])[..., 0]
    counts = np.bincount(ids)
    p = counts[counts > 0] / ids.size
    return float(nll.mean()), float(-(p * np.log(p)).sum()), n * window


def test_load_weights_scores_text_with_a_gpt2_tokenizer_directory(made: dict[str, Path]) -> None:
    result = invoke(
        "load-weights", "--weights", str(made["bare"]), "--tokenizer", str(made["tokenizer"]),
        "--text", str(made["text"]), "--text-window", "32", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = json.loads(result.stdout)["text"]
    assert set(text) >= TEXT_KEYS
    loss, unigram, tokens = gpt2_loss(made["bare"], made["tokenizer"], made["text"].read_text(), 32)
    assert text["tokens"] == tokens
    assert text["loss_nats"] == pytest.approx(loss, abs=1e-4)
    assert text["perplexity"] == pytest.approx(math.exp(text["loss_nats"]))
    assert text["unigram_nats"] == pytest.approx(unigram, rel=1e-9)


def test_a_checkpoint_directory_uses_its_own_tokenizer(made: dict[str, Path]) -> None:
    result = invoke(
        "load-weights", "--weights", str(made["with_tokenizer"]), "--text", str(made["text"]), "--json"
    )
    assert result.exit_code == 0, result.output
    text = json.loads(result.stdout)["text"]
    assert Path(text["tokenizer"]) == made["with_tokenizer"] / "tokenizer.json"
    assert text["window"] == CONFIG.max_seq_len  # the default 256 is cut to what the model takes
    loss, _, _ = gpt2_loss(made["with_tokenizer"], made["tokenizer"], made["text"].read_text(), 64)
    assert text["loss_nats"] == pytest.approx(loss, abs=1e-4)


def test_without_a_tokenizer_load_weights_says_so_and_reports_no_text(made: dict[str, Path]) -> None:
    result = invoke("load-weights", "--weights", str(made["bare"]), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] is None
    assert any("no tokenizer" in message["text"] for message in data["messages"])


@pytest.mark.slow
def test_shipped_model_load_weights_reports_held_out_loss() -> None:
    result = invoke("load-weights", "--json")
    assert result.exit_code == 0, result.output
    text = json.loads(result.stdout)["text"]
    assert Path(text["path"]).name == "heldout.txt"
    assert Path(text["tokenizer"]).name == "tokenizer.json"
    assert text["loss_nats"] <= 0.6 * text["unigram_nats"]  # a trained model: issue 13's bar


@pytest.mark.slow
def test_ablate_on_the_trained_model_no_mlp_skip_raises_the_loss(tmp_path: Path) -> None:
    sample = tmp_path / "sample.txt"
    sample.write_text(HELDOUT.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    result = invoke(
        "ablate", "--residual", "no-mlp-skip", "--eps", "1e-4", "--no-latency", "--no-plot",
        "--text", str(sample), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"]["path"] == str(sample)
    rows = {row["change"]: row for row in data["rows"]}
    no_skip = rows["residual no-mlp-skip"]["text_loss"]
    assert set(no_skip) >= LOSS_KEYS
    assert no_skip["significant"]
    assert no_skip["ci_low"] > 0
    assert no_skip["delta_nats"] == pytest.approx(no_skip["variant_nats"] - no_skip["base_nats"], abs=1e-9)
    assert no_skip["delta_nats"] > 0.5  # dropping the MLP skip wrecks a trained model
    eps = rows["eps 1e-4"]["text_loss"]
    assert abs(eps["delta_nats"]) < 0.01 * no_skip["delta_nats"]


def test_ablate_no_text_loss_skips_it(made: dict[str, Path]) -> None:
    result = invoke(
        "ablate", "--weights", str(made["with_tokenizer"]), "--eps", "1e-4", "--no-latency", "--no-plot",
        "--no-text-loss", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] is None
    assert data["rows"][0]["text_loss"] is None


def _latin1(path: Path) -> Path:
    path.write_bytes("café\n".encode("latin-1") * 50)
    return path


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("directory", "is a directory"),
        ("latin-1", "--text-encoding"),
        ("short", "fewer than one evaluation window"),
        ("bad tokenizer", "cannot be read"),
        ("big tokenizer", "vocab_size is 300"),
        ("no tokenizer", "needs a tokenizer"),
        ("window too long", "exceeds the model's max_seq_len=64"),
    ],
)
@pytest.mark.parametrize("command", ["load-weights", "ablate"])
def test_bad_text_input_is_one_line_and_writes_nothing(
    made: dict[str, Path], tmp_path: Path, command: str, case: str, fragment: str
) -> None:
    text, checkpoint, extra = made["text"], made["with_tokenizer"], []
    if case == "missing":
        text = tmp_path / "missing.txt"
    elif case == "empty":
        text = tmp_path / "empty.txt"
        text.write_text("")
    elif case == "directory":
        text = tmp_path
    elif case == "latin-1":
        text = _latin1(tmp_path / "latin.txt")
    elif case == "short":
        text = tmp_path / "short.txt"
        text.write_text("x = 1\n")
    elif case == "bad tokenizer":
        (tmp_path / "tokenizer.json").write_text("{not json")
        extra = ["--tokenizer", str(tmp_path / "tokenizer.json")]
    elif case == "big tokenizer":
        extra = ["--tokenizer", str(made["big_tokenizer"])]
    elif case == "no tokenizer":
        checkpoint = made["bare"]
    elif case == "window too long":
        extra = ["--text-window", "65"]
    outputs = ["--export", str(tmp_path / "out.safetensors")] if command == "load-weights" else [
        "--plot", str(tmp_path / "out.png"), "--no-latency"
    ]  # fmt: skip
    result = invoke(command, "--weights", str(checkpoint), "--text", str(text), *extra, *outputs)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out.safetensors").exists()
    assert not (tmp_path / "out.png").exists()


def test_latin1_text_reads_with_its_encoding(made: dict[str, Path], tmp_path: Path) -> None:
    text = _latin1(tmp_path / "latin.txt")
    result = invoke(
        "load-weights", "--weights", str(made["with_tokenizer"]), "--text", str(text),
        "--text-encoding", "latin-1", "--text-window", "8", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"]["tokens"] > 0


def test_ablate_text_with_no_text_loss_is_a_contradiction(made: dict[str, Path]) -> None:
    result = invoke(
        "ablate", "--weights", str(made["with_tokenizer"]), "--no-text-loss", "--text", str(made["text"]),
        "--no-latency", "--no-plot",
    )  # fmt: skip
    assert_one_line_error(result, "--no-text-loss")
