"""Every command on a model family's directory, as a user runs it: latency's kv-heads sweep, ablate's
variants where they apply (--rope-theta, the classic suite without a GELU for a gated MLP) checked
against transformers, load-weights --dtype, and memory admission before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error
from families import random_ids, write_family
from tiny import TINY_FLAGS
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.weights import Example, load_checkpoint, write_examples

runner = CliRunner()


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A GQA Llama directory (6 heads, 2 kv heads) and the transformers model that wrote it."""
    return write_family("llama-gqa-untied", tmp_path_factory.mktemp("llama") / "llama")


def _examples(reference: torch.nn.Module, path: Path, lengths: tuple[int, ...] = (1, 20, 64)) -> Path:
    with torch.no_grad():
        examples = [
            Example(ids, reference(ids[None]).logits[0])
            for ids in (random_ids(n, batch=1, seed=n)[0] for n in lengths)
        ]
    write_examples(examples, path)
    return path


def test_latency_kv_heads_sweep(llama: tuple[torch.nn.Module, Path]) -> None:
    """`latency --weights DIR --vary kv-heads` times every divisor of the head count; each row's FLOPs
    are the analytic count of that grouping (fewer kv heads: a narrower k|v projection)."""
    _, directory = llama
    args = ["latency", "--weights", str(directory), "--vary", "kv-heads", "--seq-len", "16"]
    result = runner.invoke(app, [*args, "--budget", "0.1", "--device", "cpu", "--json", "--no-plot"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert [row["value"] for row in rows] == [1, 2, 3, 6]
    assert [row["n_kv_heads"] for row in rows] == [1, 2, 3, 6]
    d, heads, head_dim, layers, d_mlp, vocab, tokens = 48, 6, 8, 2, 80, 97, 16
    fixed = (
        2 * layers * 2 * tokens * tokens * heads * head_dim  # Q·Kᵀ and P·V, full S×S (B=1)
        + layers * 2 * tokens * heads * head_dim * d  # output projection
        + layers * 2 * tokens * d * d_mlp * 3  # gate, up and down
        + 2 * tokens * d * vocab  # LM head
    )
    for row in rows:
        qkv = layers * 2 * tokens * d * (heads + 2 * row["value"]) * head_dim
        assert row["flops"] == fixed + qkv


@pytest.mark.parametrize(
    ("values", "fragment"), [("4", "at least two"), ("1,4", "do not divide heads=6")]
)  # fmt: skip
def test_latency_kv_heads_bad_values(values: str, fragment: str) -> None:
    """kv-heads values that do not divide the head count are one line, exit 2."""
    args = ["latency", *TINY_FLAGS, "--vary", "kv-heads", "--values", values, "--heads", "6"]
    assert_one_line_error(runner.invoke(app, args), fragment)


def test_latency_refuses_a_model_that_does_not_fit() -> None:
    """Models that would not fit in RAM are one line naming both figures and what to lower, exit 2."""
    args = ["latency", "--d-model", "16384", "--mlp", "65536", "--vocab", "100000", "--vary", "layers"]
    result = runner.invoke(app, [*args, "--values", "1,2", "--device", "cpu"])
    assert_one_line_error(result, "but the available RAM is")
    assert "GiB of weights" in result.stderr
    assert "--d-model" in result.stderr


def test_ablate_rope_theta_equals_transformers(llama: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    """`ablate --rope-theta` on a Llama: its RMSE is that of the transformers model built with that theta."""
    reference, directory = llama
    examples = _examples(reference, tmp_path / "examples.safetensors")
    args = ["ablate", "--weights", str(directory), "--examples", str(examples), "--rope-theta", "500"]
    result = runner.invoke(app, [*args, "--no-latency", "--no-plot", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert row["change"] == "rope-theta 500"
    config = reference.config.to_dict()
    config["rope_parameters"] = {**config["rope_parameters"], "rope_theta": 500.0}
    other = type(reference)(type(reference.config).from_dict(config)).eval()
    other.load_state_dict(reference.state_dict())
    squares, count = 0.0, 0
    with torch.no_grad():
        for n in (1, 20, 64):
            ids = random_ids(n, batch=1, seed=n)
            diff = reference(ids).logits.double() - other(ids).logits.double()
            squares, count = squares + float(diff.pow(2).sum()), count + diff.numel()
    assert row["rmse"] == pytest.approx((squares / count) ** 0.5, rel=1e-4)


def test_ablate_classic_suite_on_a_gated_mlp(llama: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    """The classic suite on a Llama leaves out the GELU variant (a gated MLP has none) and says so;
    asking for it by name is one line, exit 2."""
    reference, directory = llama
    examples = _examples(reference, tmp_path / "examples.safetensors", lengths=(8,))
    args = ["ablate", "--weights", str(directory), "--examples", str(examples), "--no-latency", "--no-plot"]
    result = runner.invoke(app, [*args, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = [row["change"] for row in data["rows"]]
    assert names == [
        "eps 1e-4",
        "no-scale",
        "residual input-skip",
        "residual no-mlp-skip",
        "residual parallel",
    ]
    assert any("gelu tanh" in m["text"] for m in data["messages"])
    assert_one_line_error(runner.invoke(app, [*args, "--gelu", "tanh"]), "has no GELU")


def test_ablate_rope_theta_on_learned_positions_is_refused(tmp_path: Path) -> None:
    """--rope-theta on a GPT-2 (learned positions) is refused by name."""
    result = runner.invoke(
        app, ["ablate", "--rope-theta", "500", "--no-latency", "--no-plot", "--no-text-loss"]
    )
    assert_one_line_error(result, "no rotary embeddings")


def test_load_weights_dtype_bfloat16(tmp_path: Path) -> None:
    """--dtype bfloat16 loads bfloat16 storage as it is (the stored values, no conversion)."""
    reference, directory = write_family("smollm-mqa-tied", tmp_path / "smol", dtype=torch.bfloat16)
    model, report = load_checkpoint(directory, dtype=torch.bfloat16)
    assert report.dtype == "bfloat16"
    embedding = model.token_embedding.weight
    assert embedding.dtype == torch.bfloat16
    assert torch.equal(embedding.float(), reference.get_input_embeddings().weight)
    examples = _examples(reference, tmp_path / "examples.safetensors")
    args = ["load-weights", "--weights", str(directory), "--examples", str(examples), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--dtype", "bfloat16", "--atol", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dtype"] == "bfloat16"
    assert 0 < data["max_abs_diff"] <= 0.5  # bfloat16 arithmetic: close, not exact
