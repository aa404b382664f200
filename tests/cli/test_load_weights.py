"""`toolkit load-weights` through Typer's CliRunner: shipped defaults, exit codes, JSON, export, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoints import RunsCode, gpt2, gpt2_examples, to_supplied, write_pair
from cli_checks import assert_one_line_error
from safetensors.torch import load_file, save_file
from tiny import TINY
from typer.testing import CliRunner

from toolkit import ModelConfig
from toolkit.cli import app
from toolkit.weights import Example, write_examples

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_KEYS = {"seq_len", "max_abs_diff", "rmse", "passed"}


def _run(*args: str) -> Any:
    return runner.invoke(app, ["load-weights", *args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny GPT-2 (d 24, 3 heads) in the supplied format, and its examples (lengths 1, 5, 32)."""
    hf = gpt2()
    return write_pair(tmp_path_factory.mktemp("cli"), to_supplied(hf), gpt2_examples(hf))


def test_no_options_verifies_the_shipped_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the repository root: default config, 2 heads by search, every example within atol, exit 0."""
    monkeypatch.chdir(ROOT)
    result = _run("--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True
    assert data["config"] == ModelConfig().to_dict()
    assert data["n_heads_source"] == "search"
    assert [e["seq_len"] for e in data["examples"]] == [1, 2, 16, 128, 1024]
    assert all(set(e) >= EXAMPLE_KEYS and e["passed"] for e in data["examples"])
    assert data["max_abs_diff"] <= 1e-4
    assert data["weights_path"] == "weights/reference_model.safetensors"


def test_shipped_files_found_from_another_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Outside the repository the weights/ beside the package's source tree is used."""
    monkeypatch.chdir(tmp_path)
    result = _run("--json", "--heads", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_heads_source"] == "flag"
    assert Path(data["weights_path"]).resolve() == ROOT / "weights" / "reference_model.safetensors"


def test_tables_show_search_and_verdict(tiny: tuple[Path, Path]) -> None:
    """Without --json: the config, the head-search table, the examples and the verdict."""
    weights, examples = tiny
    result = _run("--weights", str(weights), "--examples", str(examples), "--device", "cpu")
    assert result.exit_code == 0, result.output
    for text in (
        "Config read from",
        "Head-count search",
        "n_heads=3 found by search",
        "PASS: all 3 examples",
    ):
        assert text in result.stdout


def test_wrong_heads_exit_1_and_no_export(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """--heads 4: loads, does not reproduce the examples: exit 1, passed false, nothing exported."""
    weights, examples = tiny
    target = tmp_path / "out.safetensors"
    result = _run(
        "--weights",
        str(weights),
        "--examples",
        str(examples),
        "--heads",
        "4",
        "--json",
        "--export",
        str(target),
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is False
    assert data["n_heads_source"] == "flag"
    assert data["exported_to"] is None
    assert not target.exists()


def test_export_then_read_back(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """--export writes toolkit names + config; --weights reads it back with its own head count."""
    weights, examples = tiny
    target = tmp_path / "tiny_toolkit.safetensors"
    result = _run("--weights", str(weights), "--examples", str(examples), "--export", str(target), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exported_to"] == str(target)
    again = _run("--weights", str(target), "--examples", str(examples), "--json")
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["checkpoint_format"] == "toolkit"
    assert data["n_heads_source"] == "checkpoint"
    assert data["config"] == TINY.to_dict()


def test_bad_inputs_one_line_exit_2(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """Missing, truncated, unsafe, misshapen, mismatched files and impossible flags: exit 2, one line."""
    weights, _ = tiny
    hf = gpt2()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(weights.read_bytes()[:1000])
    marker = tmp_path / "ran"
    torch.save({"x": RunsCode(marker)}, tmp_path / "evil.pt")
    state = to_supplied(hf)
    state["transformer.h.0.attn.out_proj.weight"] = torch.zeros(24, 25)
    save_file(state, str(tmp_path / "misshapen.safetensors"))
    write_examples([Example(torch.tensor([1, 2]), torch.zeros(2, 60))], tmp_path / "vocab60.safetensors")
    (tmp_path / "mapping.json").write_text("{", encoding="utf-8")
    (tmp_path / "empty.pt").write_bytes(b"")
    save_file(
        {k: v.round().to(torch.int64) for k, v in to_supplied(hf).items()}, str(tmp_path / "int.safetensors")
    )
    write_examples(
        [Example(torch.tensor([1, 2]), torch.zeros(2, 61)), Example(torch.tensor([3]), torch.zeros(1, 61))],
        tmp_path / "two.safetensors",
    )
    pairs = load_file(str(tmp_path / "two.safetensors"))
    save_file({k: v for k, v in pairs.items() if k != "logits_1"}, str(tmp_path / "no_logits_1.safetensors"))

    cases = [
        (["--weights", str(tmp_path)], "is a directory without config.json"),
        (["--weights", str(weights), "--examples", str(tmp_path)], "is a directory, not a file"),
        (["--weights", str(tmp_path / "empty.pt")], "empty.pt is empty (0 bytes)"),
        (["--weights", str(tmp_path / "int.safetensors")], "not floating point: "),
        (["--weights", str(weights), "--examples", str(weights)], "holds no input_ids_<i> / logits_<i>"),
        (
            ["--weights", str(weights), "--examples", str(tmp_path / "no_logits_1.safetensors")],
            ": missing logits_1;",
        ),
        (["--weights", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["--weights", str(truncated)], "truncated"),
        (["--weights", str(tmp_path / "evil.pt")], "refusing"),
        (
            ["--weights", str(tmp_path / "misshapen.safetensors")],
            "transformer.h.0.attn.out_proj.weight expected [24, 24]",
        ),
        (["--weights", str(weights), "--examples", str(tmp_path / "vocab60.safetensors")], "vocabulary 60"),
        (["--weights", str(weights), "--mapping", str(tmp_path / "mapping.json")], "not valid JSON"),
        (["--weights", str(weights), "--heads", "5"], "not divisible by n_heads=5"),
        (["--weights", str(weights), "--export", str(tmp_path / "model.txt")], "must end in .safetensors"),
        (["--weights", str(weights), "--atol", "-1"], "--atol"),
        (["--weights", str(weights), "--device", "tpu"], "--device"),
    ]
    for args, fragment in cases:
        assert_one_line_error(_run(*args), fragment)
    assert not marker.exists()
    assert not (tmp_path / "model.txt").exists()
