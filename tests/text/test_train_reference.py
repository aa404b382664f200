"""scripts/train_reference.py end to end on a tiny config (the full run is not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.text import read_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = {"vocab_size": 300, "max_seq_len": 32, "d_model": 32, "n_heads": 2, "n_layers": 1, "d_mlp": 64}


@pytest.mark.slow
def test_train_reference_writes_a_checkpoint_that_loads_and_reproduces_gpt2(tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    out, plots = tmp_path / "weights", tmp_path / "plots"
    command = [
        sys.executable, str(ROOT / "scripts" / "train_reference.py"),
        "--steps", "20", "--config", str(config),
        "--out-dir", str(out), "--plots-dir", str(plots), "--heldout-bytes", "20000",
        "--max-train-bytes", "200000", "--eval-every", "10", "--seq-len", "16",
        "--extend-at", "0.5", "--long-every", "5",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "held-out loss" in done.stdout
    record = json.loads((out / "reference_training.json").read_text())
    assert record["steps"] == 20
    assert record["config"] == {**record["config"], **TINY_CONFIG}
    # 16 windows of 16 tokens a step; every 5th step 8 windows of max_seq_len 32: the same tokens
    assert record["train_tokens_seen"] == 20 * 16 * 16
    assert record["long_every"] == 5
    assert record["long_from"] == 10  # short windows only for the first half, then the context extended
    assert record["recipe"]["long_len"] == 32
    assert len(record["curve"]["train_nats"]) == 20
    assert (plots / "reference_training.png").stat().st_size > 0
    assert read_tokenizer(out / "tokenizer.json").get_vocab_size() == 300
    heldout = (out / "heldout.txt").read_bytes()
    assert 19_000 < len(heldout) <= 20_000
    notice = (out / "HELDOUT-NOTICE.txt").read_text()
    assert "PSF" in notice
    # The held-out modules are not in the training text: the notice names them, the script split them.
    result = CliRunner().invoke(
        app, ["load-weights", "--weights", str(out / "reference_model.safetensors"),
              "--examples", str(out / "reference_examples.safetensors"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # GPT-2's logits, reproduced by the toolkit
    data = json.loads(result.stdout)
    assert data["passed"]
    assert data["text"]["path"] == str(out / "heldout.txt")
    assert data["text"]["loss_nats"] == pytest.approx(record["heldout_nats"], abs=1e-5)
